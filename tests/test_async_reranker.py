"""AsyncReranker and its MicroBatcher in-process: coalescing, bounds, cancellation, fault isolation.

All on the fake backend (``fake_reranker``): the batcher's behaviour does not depend on the model's numbers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pytest

from crossrank import AsyncReranker, BatchingOptions, InferenceError, OverloadedError, Reranker
from crossrank.backends.base import Backend, EncodedBatch, WrappedBackend
from crossrank.engine.batcher import MicroBatcher, QueueOptions
from crossrank.engine.observed import BatchStats
from crossrank.engine.scorer import Scorer, ScoreRequest
from crossrank.errors import ConfigError


class GatedBackend(WrappedBackend):
    """The fake backend behind a gate the test opens (to hold the worker busy), and a poison token that
    makes a forward pass raise (fault injection: a backend failing mid-batch)."""

    def __init__(self, inner: Backend, poison: int | None = None) -> None:
        super().__init__(inner)
        self.poison = poison
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.batches: list[int] = []

    def forward(self, batch: EncodedBatch) -> npt.NDArray[np.float32]:
        self.entered.set()
        self.gate.wait(30)
        if self.poison is not None and (batch.input_ids == self.poison).any():
            raise RuntimeError("fault injected for this batch")
        self.batches.append(batch.size)
        return self.inner.forward(batch)

    def close(self) -> None:
        pass  # the inner backend is the shared fake_reranker fixture's


@pytest.fixture
def gated(fake_reranker: Reranker) -> Iterator[tuple[MicroBatcher, GatedBackend]]:
    backend = GatedBackend(fake_reranker.scorer.backend)
    batcher = MicroBatcher(
        Scorer(fake_reranker.scorer.tokenizer, backend),
        fake_reranker.batching,
        QueueOptions(max_wait_ms=50, max_queue_pairs=40),
    )
    batcher.start()
    yield batcher, backend
    backend.gate.set()
    batcher.close()


def _request(reranker: Reranker, query: str, documents: list[str]) -> ScoreRequest:
    return reranker.prepare(query, documents)


def test_concurrent_calls_share_forward_passes_and_match_the_sync_scores_fake_backend(fake_reranker: Reranker) -> None:
    cases = [(f"question {i} about pandas", [f"pandas eat bamboo {j}" * (1 + j) for j in range(3)]) for i in range(20)]
    passes: list[BatchStats] = []

    async def run() -> list[object]:
        rr = AsyncReranker(fake_reranker, QueueOptions(max_wait_ms=50), on_batch=passes.append)
        rr.start()
        try:
            return await asyncio.gather(*(rr.rerank(q, d) for q, d in cases))
        finally:
            rr.batcher.close()  # the session's reranker stays open

    results = asyncio.run(run())
    for (query, documents), result in zip(cases, results, strict=True):
        expected = fake_reranker.rerank(query, documents)
        assert [r.index for r in result.results] == [r.index for r in expected.results]  # type: ignore[attr-defined]
        for got, want in zip(result.results, expected.results, strict=True):  # type: ignore[attr-defined]
            assert got.score == pytest.approx(want.score, abs=1e-4)
        assert result.timing is not None and result.timing.queue_seconds >= 0  # type: ignore[attr-defined]
    assert sum(p.pairs for p in passes) == 60
    assert len(passes) < 20  # twenty requests, fewer forward passes


def test_a_full_queue_raises_overloaded_with_a_retry_estimate_fake_backend(
    gated: tuple[MicroBatcher, GatedBackend], fake_reranker: Reranker
) -> None:
    batcher, backend = gated
    backend.gate.clear()

    async def run() -> None:
        first = asyncio.create_task(batcher.submit(_request(fake_reranker, "q", ["a"] * 5)))
        await asyncio.to_thread(backend.entered.wait, 10)  # the worker holds the first request
        queued = asyncio.create_task(batcher.submit(_request(fake_reranker, "q", ["b"] * 30)))
        await asyncio.sleep(0.05)
        with pytest.raises(OverloadedError) as refused:
            await batcher.submit(_request(fake_reranker, "q", ["c"] * 20))  # 30 + 20 > 40
        assert refused.value.retry_after >= 1
        assert batcher.queued_windows == 30
        backend.gate.set()
        assert len((await first).scored.logits) == 5
        assert len((await queued).scored.logits) == 30

    asyncio.run(run())


def test_a_cancelled_caller_is_dropped_before_the_model_sees_it_fake_backend(
    gated: tuple[MicroBatcher, GatedBackend], fake_reranker: Reranker
) -> None:
    batcher, backend = gated
    backend.gate.clear()

    async def run() -> None:
        first = asyncio.create_task(batcher.submit(_request(fake_reranker, "q", ["a"] * 3)))
        await asyncio.to_thread(backend.entered.wait, 10)
        gone = asyncio.create_task(batcher.submit(_request(fake_reranker, "q", ["b"] * 7)))
        await asyncio.sleep(0.05)
        assert batcher.queued_windows == 7
        gone.cancel()
        await asyncio.sleep(0.05)
        assert batcher.queued_windows == 0
        backend.gate.set()
        await first
        after = asyncio.create_task(batcher.submit(_request(fake_reranker, "q", ["c"] * 2)))
        await after

    asyncio.run(run())
    assert backend.batches == [3, 2]  # the 7 cancelled pairs never ran


def test_a_failing_request_fails_alone_fake_backend(fake_reranker: Reranker) -> None:
    tokenizer = fake_reranker.scorer.tokenizer
    poison = tokenizer.encode_documents(["zebra"])[0].ids[0]
    backend = GatedBackend(fake_reranker.scorer.backend, poison=poison)
    batcher = MicroBatcher(Scorer(tokenizer, backend), fake_reranker.batching, QueueOptions(max_wait_ms=100))
    batcher.start()

    async def run() -> list[object]:
        calls = [
            batcher.submit(_request(fake_reranker, "good one", ["pandas", "bears"])),
            batcher.submit(_request(fake_reranker, "bad one", ["zebra"])),
            batcher.submit(_request(fake_reranker, "good two", ["cats"])),
        ]
        return await asyncio.gather(*calls, return_exceptions=True)

    try:
        good, bad, other = asyncio.run(run())
    finally:
        batcher.close()
    assert isinstance(bad, InferenceError) and "fault injected" in str(bad)
    assert len(good.scored.logits) == 2  # type: ignore[attr-defined]
    assert len(other.scored.logits) == 1  # type: ignore[attr-defined]
    assert batcher.alive is False


def test_closed_batcher_refuses_new_work_fake_backend(fake_reranker: Reranker) -> None:
    batcher = MicroBatcher(fake_reranker.scorer, fake_reranker.batching, QueueOptions())
    batcher.start()
    batcher.close()

    async def run() -> None:
        with pytest.raises(InferenceError, match="not running"):
            await batcher.submit(_request(fake_reranker, "q", ["d"]))

    asyncio.run(run())


@pytest.mark.parametrize(
    "options",
    [{"max_wait_ms": -1}, {"max_queue_pairs": 0}, {"max_batch_requests": 0}, {"max_cycle_pairs": 0}],
)
def test_queue_options_are_validated(options: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        QueueOptions(**options)  # type: ignore[arg-type]


def test_a_cycle_full_of_pairs_does_not_wait_for_a_gpu_sized_batch_fake_backend(fake_reranker: Reranker) -> None:
    """GPU batching allows 512 pairs a pass, but a cycle takes 256 at most: 300 queued pairs go at once.

    (Waiting for 512 would hold them the whole max_wait_ms, here 60 s, and the test would time out.)
    """
    batching = BatchingOptions(max_batch_tokens=32768, max_batch_size=512)
    batcher = MicroBatcher(fake_reranker.scorer, batching, QueueOptions(max_wait_ms=60_000))
    batcher.start()

    async def run() -> None:
        await asyncio.wait_for(batcher.submit(_request(fake_reranker, "q", ["a short document"] * 300)), 30)

    try:
        asyncio.run(run())
    finally:
        batcher.close()
