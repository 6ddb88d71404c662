"""AsyncReranker: the asynchronous façade; concurrent calls share batches through one MicroBatcher."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from crossrank.config import RerankerOptions, RerankOptions
from crossrank.engine.batcher import Batched, MicroBatcher, QueueOptions
from crossrank.engine.observed import BatchStats, ObservedBackend
from crossrank.reranker import Reranker
from crossrank.types import RerankResult, Timing

__all__ = ["AsyncReranker"]


class AsyncReranker:
    """Reranks from asyncio code; calls from many tasks are scored together on one worker thread.

    Example:
        >>> async with AsyncReranker(Reranker("BAAI/bge-reranker-v2-m3")) as rr:
        ...     result = await rr.rerank("苹果手机", ["苹果是一种水果", "iPhone 15 正式发布"])

    Args:
        reranker: the loaded model and its defaults (truncation, batching).
        queue: how long a call waits for others and how much work may be queued.
        on_batch: called on the worker thread after every forward pass (for metrics).
    """

    def __init__(
        self,
        reranker: Reranker,
        queue: QueueOptions | None = None,
        *,
        on_batch: Callable[[BatchStats], None] | None = None,
    ) -> None:
        self.reranker = reranker
        scorer = reranker.scorer
        if on_batch is not None:
            scorer = scorer.with_backend(ObservedBackend(scorer.backend, on_batch))
        self.batcher = MicroBatcher(scorer, reranker.batching, queue or QueueOptions())

    @classmethod
    def from_pretrained(cls, model: str, *, queue: QueueOptions | None = None, **kwargs: Any) -> AsyncReranker:
        """Load ``model`` (same keyword arguments as ``Reranker``) and wrap it; call ``start()`` next."""
        return cls(Reranker(model, **kwargs), queue)

    @classmethod
    def from_options(cls, options: RerankerOptions, *, queue: QueueOptions | None = None) -> AsyncReranker:
        """Load the model ``options`` describe and wrap it; call ``start()`` next."""
        return cls(Reranker.from_options(options), queue)

    def start(self) -> None:
        """Start the worker thread (``async with`` does it)."""
        self.batcher.start()

    def close(self) -> None:
        """Score what is queued, stop the worker and release the model."""
        self.batcher.close()
        self.reranker.close()

    async def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_n: int | None = None,
        return_documents: bool = True,
        min_score: float | None = None,
        use_cache: bool = True,
        options: RerankOptions | None = None,
    ) -> RerankResult:
        """``Reranker.rerank``, awaited; the result also carries its ``timing``.

        ``options`` are this call's score-changing options (``max_length``, ``aggregate``, ``truncate``, ...).

        Raises:
            OverloadedError: too much work is queued (retry after ``error.retry_after`` seconds).
        """
        request = self.reranker.prepare(
            query, documents, top_n=top_n, min_score=min_score, use_cache=use_cache, options=options
        )
        batched: Batched = await self.batcher.submit(request)
        result = self.reranker.finish(
            request, batched.scored, top_n=top_n, return_documents=return_documents, min_score=min_score
        )
        return dataclasses.replace(
            result, timing=Timing(queue_seconds=batched.queue_seconds, inference_seconds=batched.inference_seconds)
        )

    async def __aenter__(self) -> AsyncReranker:
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
