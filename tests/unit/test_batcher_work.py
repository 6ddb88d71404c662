"""The micro-batcher counts work in windows and tokens: planning, the request cap, the queue bounds, stopping
a call whose callers have gone between forward passes, and the calibrated cap. Fake backend: fast, no model."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pytest

from crossrank import Reranker
from crossrank.backends.base import EncodedBatch
from crossrank.backends.fake import FakeBackend
from crossrank.config import MAX_CHUNKS_PER_DOC, BatchingOptions, ChunkingOptions, TruncationOptions
from crossrank.engine.batcher import MicroBatcher, QueueOptions
from crossrank.engine.scorer import Scorer, ScoreRequest, plan_work
from crossrank.engine.tokenizer import PairTokenizer
from crossrank.errors import ConfigError, InputTooLongError, LimitExceededError, OverloadedError

LONG = "a long passage about glaciers and the rivers they feed, " * 400  # ~4,800 tokens
# Small passes, so a request is many forward passes.
SMALL_PASSES = BatchingOptions(max_batch_tokens=4096, max_batch_size=4)


class GatedFake(FakeBackend):
    """The fake backend behind a gate the test opens, with an event set when a pass has started."""

    def __init__(self, latency: float = 0.0) -> None:
        super().__init__(latency=latency)
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def forward(self, batch: EncodedBatch) -> npt.NDArray[np.float32]:
        self.entered.set()
        self.gate.wait(10)
        return super().forward(batch)


@pytest.fixture
def tokenizer(fake_reranker: Reranker) -> PairTokenizer:
    return fake_reranker.scorer.tokenizer


def _request(documents: list[str], *, max_length: int = 128, max_chunks: int = 64) -> ScoreRequest:
    return ScoreRequest(
        query="where do glaciers flow",
        documents=documents,
        truncation=TruncationOptions(max_length=max_length),
        chunking=ChunkingOptions(max_chunks_per_doc=max_chunks),
    )


@pytest.fixture
def batcher(tokenizer: PairTokenizer) -> Iterator[tuple[MicroBatcher, GatedFake]]:
    backend = GatedFake()
    batcher = MicroBatcher(Scorer(tokenizer, backend), SMALL_PASSES, QueueOptions(max_wait_ms=0))
    batcher.start()
    yield batcher, backend
    backend.gate.set()
    batcher.close()


@pytest.mark.parametrize("max_chunks", [1, 3, 64])
def test_planned_work_is_what_scoring_computes(tokenizer: PairTokenizer, max_chunks: int) -> None:
    request = _request(["", "short one", LONG, "medium " * 100], max_chunks=max_chunks)
    work = plan_work(tokenizer, request)
    (scored,) = Scorer(tokenizer, FakeBackend()).score([request], SMALL_PASSES)
    assert work.complete
    assert work.windows == scored.usage.chunks == int(scored.chunks.sum())
    assert work.tokens == scored.usage.total_tokens


def test_planning_stops_past_a_cap_and_refuses_like_scoring(tokenizer: PairTokenizer) -> None:
    request = _request([LONG] * 30)
    full = plan_work(tokenizer, request)
    stopped = plan_work(tokenizer, request, stop_above=10_000)
    assert not stopped.complete and 10_000 < stopped.tokens < full.tokens
    strict = ScoreRequest(
        query="q",
        documents=["ok", LONG],
        truncation=TruncationOptions(max_length=128, truncate=False),
        chunking=ChunkingOptions(max_chunks_per_doc=2),
    )
    with pytest.raises(InputTooLongError, match=r"documents\[1\]"):
        plan_work(tokenizer, strict)


def test_a_request_over_the_cap_is_refused_before_it_is_queued(tokenizer: PairTokenizer) -> None:
    backend = FakeBackend()
    batcher = MicroBatcher(Scorer(tokenizer, backend), SMALL_PASSES, QueueOptions(max_request_tokens=5000))
    batcher.start()

    async def run() -> None:
        with pytest.raises(LimitExceededError) as refused:
            await batcher.submit(_request([LONG, LONG]))
        assert refused.value.limit == 5000 and refused.value.value > 5000
        assert "--max-request-tokens 5000" in str(refused.value.fix)
        assert batcher.queued_requests == 0
        await batcher.submit(_request(["short one"]))  # a small one still passes

    try:
        asyncio.run(run())
    finally:
        batcher.close()
    assert backend.calls == 1  # only the small request reached the model
    assert batcher.stats.refused_requests == 1


def test_the_queue_is_bounded_in_tokens_with_retry_after_from_tokens_per_second(
    batcher: tuple[MicroBatcher, GatedFake], tokenizer: PairTokenizer
) -> None:
    _, backend = batcher
    ten, fifteen = _request(["medium " * 100] * 10), _request(["medium " * 100] * 15)
    ten_tokens, fifteen_tokens = plan_work(tokenizer, ten).tokens, plan_work(tokenizer, fifteen).tokens
    # 25 windows fit the window bound; their tokens are one more than the token bound.
    bound = ten_tokens + fifteen_tokens - 1
    bounded = MicroBatcher(
        Scorer(tokenizer, backend), SMALL_PASSES, QueueOptions(max_wait_ms=0, max_queue_tokens=bound)
    )
    bounded.start()
    backend.gate.clear()

    async def run() -> None:
        first = asyncio.create_task(bounded.submit(_request(["short one"])))
        await asyncio.to_thread(backend.entered.wait, 5)  # the worker holds the first request
        queued = asyncio.create_task(bounded.submit(ten))
        await asyncio.sleep(0.05)
        assert (bounded.queued_windows, bounded.queued_tokens) == (10, ten_tokens)
        with pytest.raises(OverloadedError, match=f"{bound} tokens") as refused:
            await asyncio.wait_for(bounded.submit(fifteen), 5)
        assert refused.value.retry_after >= 1
        backend.gate.set()
        await first
        await queued
        assert bounded.tokens_per_second > 0

    try:
        asyncio.run(run())
    finally:
        backend.gate.set()
        bounded.close()


def test_a_call_whose_caller_has_gone_stops_between_forward_passes(tokenizer: PairTokenizer) -> None:
    backend = FakeBackend(latency=0.02)
    batcher = MicroBatcher(Scorer(tokenizer, backend), SMALL_PASSES, QueueOptions(max_wait_ms=0))
    batcher.start()
    request = _request([LONG] * 4)  # 4 x 39 windows of 128 tokens: 39 passes of 4 (~0.8 s)
    planned = plan_work(tokenizer, request).windows

    async def run() -> None:
        task = asyncio.create_task(batcher.submit(request))
        while backend.calls < 3:
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.to_thread(_wait_until, lambda: batcher.stats.stopped_calls == 1)

    try:
        asyncio.run(run())
        calls = backend.calls
    finally:
        batcher.close()
    assert calls <= 5  # the pass in progress ends, no other starts
    assert batcher.stats.dropped_windows == planned - backend.pairs > 0
    assert backend.calls == calls  # nothing ran after the stop


def test_a_request_batched_with_a_cancelled_one_is_scored_whole(tokenizer: PairTokenizer) -> None:
    backend = FakeBackend(latency=0.01)
    # Passes of ~4 windows, but a cycle waits for 64 windows (or 200 ms): the two requests share one call.
    batching = BatchingOptions(max_batch_tokens=512, max_batch_size=64)
    batcher = MicroBatcher(Scorer(tokenizer, backend), batching, QueueOptions(max_wait_ms=200))
    batcher.start()
    stays, goes = _request(["medium " * 100] * 12), _request(["other " * 100] * 12)

    async def run() -> None:
        kept = asyncio.create_task(batcher.submit(stays))
        gone = asyncio.create_task(batcher.submit(goes))
        while backend.calls < 1:
            await asyncio.sleep(0.002)
        gone.cancel()
        scored = await kept
        assert len(scored.scored.logits) == 12

    try:
        asyncio.run(run())
    finally:
        batcher.close()
    assert batcher.stats.stopped_calls == 0
    assert (
        backend.calls > 2 and backend.pairs == 24
    )  # both were in one call: it ran to the end for the caller still waiting


@pytest.mark.serial  # reads the fake backend's throughput against the clock
def test_the_cap_is_calibrated_from_measured_tokens_per_second(tokenizer: PairTokenizer) -> None:
    # 100 µs a token: 10,000 tokens/s, so 5 s of work is about 50,000 tokens. The sleep (0.2 s for the calibration's
    # 2,048 tokens) dwarfs the timed pass's own CPU work, which a busy machine (pytest's other workers) slows.
    backend = FakeBackend(latency_per_token=1e-4)
    batcher = MicroBatcher(Scorer(tokenizer, backend), BatchingOptions(), QueueOptions(max_request_seconds=5.0))
    batcher.start()
    try:
        cap = batcher.max_request_tokens
        assert cap is not None and 30_000 < cap < 55_000  # above the floor, 2 x 8,192
        assert batcher.max_queue_tokens == 8 * cap
    finally:
        batcher.close()


def _wait_until(condition: object, timeout: float = 5.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.005)


@pytest.mark.parametrize(
    "options",
    [
        {"max_queue_tokens": 0},
        {"max_request_tokens": 0},
        {"max_request_seconds": 0},
        {"max_request_tokens": 2000, "max_queue_tokens": 1000},
    ],
)
def test_work_bounds_are_validated(options: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        QueueOptions(**options)  # type: ignore[arg-type]


def test_max_chunks_per_doc_has_a_maximum() -> None:
    ChunkingOptions(max_chunks_per_doc=MAX_CHUNKS_PER_DOC)
    with pytest.raises(ConfigError, match=str(MAX_CHUNKS_PER_DOC)):
        ChunkingOptions(max_chunks_per_doc=MAX_CHUNKS_PER_DOC + 1)
