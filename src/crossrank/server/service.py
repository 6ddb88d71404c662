"""The one rerank service behind every dialect: limits, readiness, disconnects, timing headers.

Dialect modules translate their wire format into a ``RerankCall`` and the ``RerankResult`` back;
everything they share (the limits, the queue, the metrics) happens here once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import Request, Response

from crossrank.async_reranker import AsyncReranker
from crossrank.config import MAX_INSTRUCTION_CHARS, RerankOptions
from crossrank.errors import CrossrankError, LimitExceededError, OverloadedError
from crossrank.server.errors import ClientClosedError, NotReadyError
from crossrank.server.metrics import Metrics
from crossrank.server.middleware import request_details
from crossrank.server.options import ServerOptions
from crossrank.types import RerankResult

__all__ = ["RerankCall", "RerankService", "ServerState", "get_service"]

_log = logging.getLogger(__name__)

Status = Literal["loading", "ready", "failed"]


@dataclass(frozen=True, kw_only=True, slots=True)
class RerankCall:
    """A rerank request whatever dialect it came in (top_n ``None``: all documents)."""

    query: str
    documents: Sequence[str]
    top_n: int | None = None
    min_score: float | None = None
    use_cache: bool = True
    options: RerankOptions = field(default_factory=RerankOptions)  # the request's score-changing options


class ServerState:
    """What the server knows about its model: loading, ready (with the reranker) or failed (with why)."""

    def __init__(self) -> None:
        self.status: Status = "loading"
        self.reranker: AsyncReranker | None = None
        self.error: CrossrankError | None = None
        self.started = time.time()

    def require(self) -> AsyncReranker:
        """The reranker, or ``NotReadyError`` while it loads or after it failed."""
        if self.status == "ready" and self.reranker is not None:
            return self.reranker
        if self.status == "failed":
            # Why (a path, an exception's text) is in the server log, not in answers.
            raise NotReadyError("the model failed to load", fix="read the server log and restart it")
        raise NotReadyError("the model is still loading", fix="wait for GET /ready to answer 200")


class RerankService:
    """Checks limits, queues the call, answers disconnects and writes timing headers."""

    def __init__(self, state: ServerState, options: ServerOptions, metrics: Metrics) -> None:
        self.state = state
        self.options = options
        self.metrics = metrics

    def check_limits(self, call: RerankCall) -> None:
        """413 for a request over a configured size limit, naming the field and the limit."""
        o = self.options
        if len(call.documents) > o.max_documents:
            raise LimitExceededError(
                "documents",
                len(call.documents),
                o.max_documents,
                unit="documents",
                fix=f"send at most {o.max_documents} documents per request (server flag --max-documents)",
            )
        if len(call.query) > o.max_query_chars:
            raise LimitExceededError(
                "query",
                len(call.query),
                o.max_query_chars,
                unit="characters",
                fix=f"shorten the query (server flag --max-query-chars: {o.max_query_chars})",
            )
        instruction = call.options.instruction
        if instruction is not None and len(instruction) > MAX_INSTRUCTION_CHARS:
            raise LimitExceededError(
                "instruction",
                len(instruction),
                MAX_INSTRUCTION_CHARS,
                unit="characters",
                fix=f"shorten the instruction to {MAX_INSTRUCTION_CHARS} characters or fewer",
            )
        for i, document in enumerate(call.documents):
            if len(document) > o.max_document_chars:
                raise LimitExceededError(
                    f"documents[{i}]",
                    len(document),
                    o.max_document_chars,
                    unit="characters",
                    fix=f"split the document (server flag --max-document-chars: {o.max_document_chars})",
                )

    async def rerank(self, request: Request, response: Response, call: RerankCall) -> RerankResult:
        """Score ``call``; abandons it when the client disconnects first."""
        started = time.perf_counter()
        reranker = self.state.require()
        self.check_limits(call)
        details = request_details(request.scope)
        details["documents"] = len(call.documents)
        # `Cache-Control: no-cache` (RFC 9111: don't answer from a cache) scores afresh.
        use_cache = call.use_cache and "no-cache" not in request.headers.get("cache-control", "").lower()
        task = asyncio.ensure_future(
            reranker.rerank(
                call.query,
                call.documents,
                top_n=call.top_n,
                min_score=call.min_score,
                return_documents=False,
                use_cache=use_cache,
                options=call.options,
            )
        )
        try:
            result = await _unless_disconnected(request, task, self.metrics.dropped.inc)
        except OverloadedError:
            self.metrics.overloaded.inc()
            raise
        total = time.perf_counter() - started
        usage, timing = result.usage, result.timing
        queue_s = timing.queue_seconds if timing else 0.0
        inference_s = timing.inference_seconds if timing else 0.0
        self.metrics.observe_usage(usage, len(call.documents), queue_s)
        details.update(
            tokens=usage.total_tokens,
            truncated_documents=usage.truncated_documents,
            cached_documents=usage.cached_documents,
            queue_ms=round(queue_s * 1000, 3),
            inference_ms=round(inference_s * 1000, 3),
        )
        backend = reranker.reranker.scorer.backend
        response.headers.update(
            {
                "x-compute-type": backend.device,
                "x-compute-tokens": str(usage.total_tokens),
                "x-compute-characters": str(len(call.query) * len(call.documents) + sum(map(len, call.documents))),
                "x-queue-time": _ms(queue_s),
                "x-inference-time": _ms(inference_s),
                "x-total-time": _ms(total),
            }
        )
        return result


def _ms(seconds: float) -> str:
    return str(round(seconds * 1000))


async def _unless_disconnected(
    request: Request, task: asyncio.Future[RerankResult], on_drop: Callable[[], None]
) -> RerankResult:
    """Await ``task``; if the client goes away first, cancel it (its queued work is dropped)."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    waiting: set[asyncio.Future[Any]] = {task, watcher}
    try:
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    if not task.done():
        task.cancel()
        on_drop()
        _log.info("client disconnected; its request was dropped")
        with contextlib.suppress(asyncio.CancelledError):
            await task
        # Nobody reads this answer; it exists for the access log and the metrics (status 499).
        raise ClientClosedError("the client disconnected before its answer was ready")
    return task.result()


async def get_service(request: Request) -> RerankService:
    """FastAPI dependency: the app's rerank service (async: a plain function would cost a worker thread per request)."""
    service: RerankService = request.app.state.service
    return service
