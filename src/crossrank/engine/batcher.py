"""MicroBatcher: requests from many concurrent callers scored together by one worker thread.

Callers on an asyncio loop ``submit`` a ``ScoreRequest`` and await its result. One worker thread
owns the Scorer (and so the tokenizer, which is never used from two threads): it waits for work,
lets more arrive for at most ``max_wait_ms`` or until a batch's worth of pairs is queued, then
scores everything it took in one ``Scorer.score`` call, where the pairs of all those requests are
length-sorted into shared token-budget batches. The queue is bounded in pairs: a submit that would
pass the bound fails at once with ``OverloadedError`` (and a retry estimate) instead of growing
memory. A caller that gives up (its task is cancelled, e.g. the HTTP client disconnected) has its
queued request dropped before the model sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from crossrank.backends.base import Backend, EncodedBatch, WrappedBackend
from crossrank.config import BatchingOptions
from crossrank.engine.memory import release_free_memory
from crossrank.engine.scorer import RequestScorer, ScoredRequest, ScoreRequest
from crossrank.errors import ConfigError, CrossrankError, InferenceError, OverloadedError

__all__ = ["BatchStats", "Batched", "MicroBatcher", "ObservedBackend", "QueueOptions"]

_log = logging.getLogger(__name__)

# How long the queue stays empty before the worker hands freed memory back to the OS (engine/memory.py).
IDLE_RELEASE_S = 0.5


@dataclass(frozen=True, kw_only=True, slots=True)
class QueueOptions:
    """How the micro-batcher waits and how much it holds.

    Attributes:
        max_wait_ms: longest a request waits for others to share its batches (0: take what is queued).
        max_queue_pairs: pairs queued at most; beyond it ``submit`` raises ``OverloadedError``.
        max_batch_requests: requests scored together at most (1 disables cross-request batching).
        max_cycle_pairs: pairs taken into one scoring call at most (a bigger single request runs alone),
            so small requests are not held behind a long queue of others.
    """

    max_wait_ms: float = 5.0
    max_queue_pairs: int = 8192
    max_batch_requests: int | None = None
    max_cycle_pairs: int = 256

    def __post_init__(self) -> None:
        if self.max_wait_ms < 0:
            raise ConfigError(f"max_wait_ms must be at least 0, got {self.max_wait_ms}")
        if self.max_queue_pairs < 1:
            raise ConfigError(f"max_queue_pairs must be at least 1, got {self.max_queue_pairs}")
        if self.max_batch_requests is not None and self.max_batch_requests < 1:
            raise ConfigError(f"max_batch_requests must be at least 1, got {self.max_batch_requests}")
        if self.max_cycle_pairs < 1:
            raise ConfigError(f"max_cycle_pairs must be at least 1, got {self.max_cycle_pairs}")


@dataclass(frozen=True, slots=True)
class Batched:
    """A request's scores and where its time went.

    Attributes:
        scored: logits and token accounting, as ``Scorer.score`` returns them.
        queue_seconds: from submit until the worker started scoring it.
        inference_seconds: the scoring call it was part of (shared with the requests batched with it).
    """

    scored: ScoredRequest
    queue_seconds: float
    inference_seconds: float


@dataclass(frozen=True, slots=True)
class BatchStats:
    """One forward pass, for metrics: pairs, tokens computed (padding included) and real, and its wall time."""

    pairs: int
    padded_tokens: int
    tokens: int
    seconds: float


class ObservedBackend(WrappedBackend):
    """A backend that reports every forward pass to ``observe`` (metrics), otherwise the wrapped one."""

    def __init__(self, inner: Backend, observe: Callable[[BatchStats], None]) -> None:
        super().__init__(inner)
        self._observe = observe

    def forward(self, batch: EncodedBatch) -> npt.NDArray[np.float32]:
        started = time.perf_counter()
        scores = self.inner.forward(batch)
        self._observe(
            BatchStats(
                pairs=batch.size,
                padded_tokens=batch.computed_tokens(self.runs_pairs_alone),
                tokens=int(batch.attention_mask.sum()),
                seconds=time.perf_counter() - started,
            )
        )
        return scores


@dataclass(slots=True)
class _Entry:
    request: ScoreRequest
    future: asyncio.Future[Batched]
    loop: asyncio.AbstractEventLoop
    enqueued: float
    pairs: int
    cancelled: bool = False


@dataclass(slots=True)
class _Throughput:
    """Pairs per second of recent scoring calls (exponential average), for Retry-After estimates."""

    pairs_per_second: float = 0.0

    def add(self, pairs: int, seconds: float) -> None:
        rate = pairs / max(seconds, 1e-6)
        self.pairs_per_second = rate if self.pairs_per_second == 0 else 0.8 * self.pairs_per_second + 0.2 * rate


@dataclass(slots=True)
class _State:
    queue: deque[_Entry] = field(default_factory=deque)
    queued_pairs: int = 0
    closing: bool = False


class MicroBatcher:
    """Coalesces concurrent requests into shared batches on one worker thread (see the module doc).

    Use from one asyncio event loop: ``start()``, ``await submit(request)`` from any number of tasks,
    ``close()`` when done (queued requests are still scored; new ones are refused).
    """

    def __init__(self, scorer: RequestScorer, batching: BatchingOptions, queue: QueueOptions) -> None:
        self._scorer = scorer
        self._batching = batching
        self.options = queue
        self._state = _State()
        self._cond = threading.Condition()
        self._throughput = _Throughput()
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    @property
    def queued_pairs(self) -> int:
        """Pairs waiting for the worker."""
        return self._state.queued_pairs

    @property
    def queued_requests(self) -> int:
        """Requests waiting for the worker."""
        return len(self._state.queue)

    @property
    def alive(self) -> bool:
        """Whether the worker thread is running."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the worker thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="crossrank-batcher", daemon=True)
            self._thread.start()

    def close(self, timeout: float | None = None) -> None:
        """Refuse new work, let the worker finish what is queued, and stop it."""
        with self._cond:
            self._state.closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def retry_after(self) -> int:
        """Seconds until the queue has likely drained (at least 1), from recent throughput."""
        rate = self._throughput.pairs_per_second
        if rate <= 0:
            return 1
        return max(1, min(60, math.ceil(self._state.queued_pairs / rate)))

    async def submit(self, request: ScoreRequest) -> Batched:
        """Queue ``request`` and wait for its scores.

        Raises:
            OverloadedError: the queue holds too many pairs to take this request now.
            InferenceError: the worker is not running or the model failed on this request.
        """
        pairs = max(len(request.documents), 1)
        loop = asyncio.get_running_loop()
        entry = _Entry(
            request=request, future=loop.create_future(), loop=loop, enqueued=time.perf_counter(), pairs=pairs
        )
        with self._cond:
            if self._state.closing or not self.alive:
                raise InferenceError(
                    "the scoring worker is not running (the server is shutting down or its worker stopped)",
                    fix="retry on another replica; if it persists, restart the server and read its log",
                )
            state = self._state
            # A request alone bigger than the bound is still taken into an empty queue.
            if state.queue and state.queued_pairs + pairs > self.options.max_queue_pairs:
                raise OverloadedError(
                    f"the queue holds {state.queued_pairs} pairs; {pairs} more would pass its bound of "
                    f"{self.options.max_queue_pairs}",
                    retry_after=self.retry_after(),
                    fix="retry after the Retry-After delay, or add replicas",
                )
            state.queue.append(entry)
            state.queued_pairs += pairs
            self._cond.notify_all()
        try:
            return await entry.future
        except asyncio.CancelledError:
            entry.cancelled = True
            self._forget(entry)
            raise

    def _forget(self, entry: _Entry) -> None:
        with self._cond:
            try:
                self._state.queue.remove(entry)
            except ValueError:
                return  # the worker already took it; its result will be dropped
            self._state.queued_pairs -= entry.pairs

    def _take(self) -> list[_Entry] | None:
        """Wait for work and return the entries of one scoring call (``None``: closed and drained)."""
        options, state = self.options, self._state
        with self._cond:
            while not state.queue:
                if state.closing:
                    return None
                self._cond.wait()
            deadline = state.queue[0].enqueued + options.max_wait_ms / 1000
            # A cycle takes max_cycle_pairs at most: waiting for more (a GPU's bigger batches) only adds latency.
            fill = min(self._batching.max_batch_size, options.max_cycle_pairs)
            while (
                not state.closing
                and state.queued_pairs < fill
                and len(state.queue) < (options.max_batch_requests or 1 << 30)
            ):
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            taken: list[_Entry] = []
            pairs = 0
            while state.queue and (not taken or pairs + state.queue[0].pairs <= options.max_cycle_pairs):
                if options.max_batch_requests is not None and len(taken) >= options.max_batch_requests:
                    break
                entry = state.queue.popleft()
                state.queued_pairs -= entry.pairs
                pairs += entry.pairs
                taken.append(entry)
            return taken

    def _run(self) -> None:
        while (taken := self._take()) is not None:
            live = [e for e in taken if not e.cancelled]
            if live:
                self._score(live)
                if self._stays_idle(IDLE_RELEASE_S):
                    release_free_memory()

    def _stays_idle(self, seconds: float) -> bool:
        """Wait until work is queued or ``seconds`` pass; whether the queue stayed empty all that time."""
        with self._cond:
            return not self._cond.wait_for(lambda: bool(self._state.queue) or self._state.closing, seconds)

    def _score(self, entries: list[_Entry]) -> None:
        started = time.perf_counter()
        try:
            results = self._scorer.score([e.request for e in entries], self._batching)
        except Exception as exc:
            if len(entries) > 1:
                # One bad request must not fail the others it was batched with: score each alone.
                for entry in entries:
                    self._score([entry])
                return
            _resolve(entries[0], None, _as_inference_error(exc))
            return
        seconds = time.perf_counter() - started
        self._throughput.add(sum(e.pairs for e in entries), seconds)
        for entry, scored in zip(entries, results, strict=True):
            _resolve(entry, Batched(scored, started - entry.enqueued, seconds), None)


def _as_inference_error(exc: Exception) -> CrossrankError:
    if isinstance(exc, CrossrankError):
        return exc
    _log.exception("scoring failed")
    return InferenceError(f"scoring failed: {type(exc).__name__}: {exc}", fix="see the server log for the cause")


def _resolve(entry: _Entry, result: Batched | None, error: CrossrankError | None) -> None:
    def settle() -> None:
        if entry.future.done():
            return  # cancelled by its caller meanwhile
        if error is not None:
            entry.future.set_exception(error)
        else:
            entry.future.set_result(result)  # type: ignore[arg-type]

    # A closed loop (RuntimeError) means nobody is waiting any more.
    with contextlib.suppress(RuntimeError):
        entry.loop.call_soon_threadsafe(settle)
