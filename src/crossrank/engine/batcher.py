"""MicroBatcher: requests from many concurrent callers scored together by one worker thread.

Callers on an asyncio loop ``submit`` a ``ScoreRequest`` and await its result. One worker thread
owns the Scorer (and so the tokenizer, which is never used from two threads): it waits for work,
lets more arrive for at most ``max_wait_ms`` or until a batch's worth of pairs is queued, then
scores everything it took in one ``Scorer.score`` call, where the pairs of all those requests are
length-sorted into shared token-budget batches.

Work is counted in the model's unit, never in documents: before a request is queued, ``plan_work``
tokenises it (off the event loop) and counts its windows (query-chunk pairs) and their tokens. A
request over ``max_request_tokens`` fails at once with ``LimitExceededError``; one that would pass the
queue's bound in windows or tokens fails with ``OverloadedError`` and a retry estimate from recent
tokens/s, instead of growing memory. A caller that gives up (its task is cancelled, e.g. the HTTP
client disconnected) has its queued request dropped before the model sees it, and a scoring call
whose callers have all gone is stopped before its next forward pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from crossrank.backends.base import Backend, EncodedBatch, WrappedBackend
from crossrank.config import BatchingOptions, ChunkingOptions, TruncationOptions
from crossrank.engine.memory import release_free_memory
from crossrank.engine.scorer import RequestScorer, ScoredRequest, ScoreRequest, Work, plan_work
from crossrank.errors import ConfigError, CrossrankError, InferenceError, LimitExceededError, OverloadedError

__all__ = ["Batched", "MicroBatcher", "QueueOptions", "QueueStats"]

_log = logging.getLogger(__name__)

# How long the queue stays empty before the worker hands freed memory back to the OS (engine/memory.py).
IDLE_RELEASE_S = 0.5
# A derived token bound holds this many requests at the cap (about 8 x max_request_seconds of work).
QUEUED_REQUESTS_AT_CAP = 8
# Requests this small are planned on the event loop (~1 ms of tokenising); bigger ones in a thread.
_INLINE_PLAN_CHARS = 2000


def _calibration_request() -> ScoreRequest:
    """What a calibration times: 8 pairs of 256 tokens, one short pass (~0.7 s on 2 CPU cores for MiniLM-L6)."""
    return ScoreRequest(
        query="how many tokens per second does this model read",
        documents=[f"calibration document {i}: " + "words of a passage " * 80 for i in range(8)],
        truncation=TruncationOptions(max_length=256),
        chunking=ChunkingOptions(max_chunks_per_doc=1),
        use_cache=False,
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class QueueOptions:
    """How the micro-batcher waits and how much it holds.

    Every bound counts the model's work as planned by ``plan_work``: windows (query-chunk pairs)
    and their tokens, special tokens included; a document is one window or more.

    Attributes:
        max_wait_ms: longest a request waits for others to share its batches (0: take what is queued).
        max_queue_pairs: windows queued at most; beyond it ``submit`` raises ``OverloadedError``.
        max_queue_tokens: tokens of the queued windows at most (``OverloadedError`` beyond); ``None``:
            ``QUEUED_REQUESTS_AT_CAP`` times the request cap when there is one, else no token bound.
        max_request_tokens: tokens one request's windows may hold (``LimitExceededError`` beyond, before
            it is queued); ``None``: calibrated at ``start`` from ``max_request_seconds``, else no cap.
        max_request_seconds: with ``max_request_tokens=None``, the cap is the model's tokens/s, measured
            on this machine when the batcher starts, times this (so no request holds the worker longer).
        max_batch_requests: requests scored together at most (1 disables cross-request batching).
        max_cycle_pairs: windows taken into one scoring call at most (a bigger single request runs alone),
            so small requests are not held behind a long queue of others.
    """

    max_wait_ms: float = 5.0
    max_queue_pairs: int = 8192
    max_queue_tokens: int | None = None
    max_request_tokens: int | None = None
    max_request_seconds: float | None = None
    max_batch_requests: int | None = None
    max_cycle_pairs: int = 256

    def __post_init__(self) -> None:
        if self.max_wait_ms < 0:
            raise ConfigError(f"max_wait_ms must be at least 0, got {self.max_wait_ms}")
        if self.max_queue_pairs < 1:
            raise ConfigError(f"max_queue_pairs must be at least 1, got {self.max_queue_pairs}")
        for name in ("max_queue_tokens", "max_request_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be at least 1, got {value}")
        if self.max_request_seconds is not None and not self.max_request_seconds > 0:
            raise ConfigError(f"max_request_seconds must be more than 0, got {self.max_request_seconds}")
        if (
            self.max_request_tokens is not None
            and self.max_queue_tokens is not None
            and self.max_request_tokens > self.max_queue_tokens
        ):
            raise ConfigError(
                f"max_request_tokens ({self.max_request_tokens}) is more than max_queue_tokens "
                f"({self.max_queue_tokens}): a request at the cap could never be queued behind another",
                fix="raise --max-queue-tokens or lower --max-request-tokens",
            )
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


@dataclass(slots=True)
class QueueStats:
    """Counters since start, for metrics.

    Attributes:
        dropped_windows: planned windows never computed because their caller had gone (dropped from
            the queue, or left unscored when a call was stopped between forward passes).
        stopped_calls: scoring calls stopped between forward passes because all their callers had gone.
        refused_requests: requests refused before queueing for passing ``max_request_tokens``.
    """

    dropped_windows: int = 0
    stopped_calls: int = 0
    refused_requests: int = 0


@dataclass(slots=True)
class _Entry:
    request: ScoreRequest
    future: asyncio.Future[Batched]
    loop: asyncio.AbstractEventLoop
    enqueued: float
    work: Work
    cancelled: bool = False


@dataclass(slots=True)
class _Throughput:
    """Tokens per second of recent scoring calls (exponential average), for Retry-After estimates."""

    tokens_per_second: float = 0.0

    def add(self, tokens: int, seconds: float) -> None:
        rate = tokens / max(seconds, 1e-6)
        self.tokens_per_second = rate if self.tokens_per_second == 0 else 0.8 * self.tokens_per_second + 0.2 * rate


@dataclass(slots=True)
class _State:
    queue: deque[_Entry] = field(default_factory=deque)
    queued_windows: int = 0
    queued_tokens: int = 0
    # The entries of the scoring call in progress and the windows its forward passes have sent so far.
    running: list[_Entry] = field(default_factory=list)
    forwarded: int = 0
    closing: bool = False


class _Stopped(Exception):
    """Every caller of the scoring call in progress has gone: the rest of its passes are not run."""


class _StopWhenAbandoned(WrappedBackend):
    """Checks before each forward pass that someone still waits for the call in progress (else ``_Stopped``)."""

    def __init__(self, inner: Backend, state: _State) -> None:
        super().__init__(inner)
        self._state = state

    def forward(self, batch: EncodedBatch) -> npt.NDArray[np.float32]:
        state = self._state
        # Entries batched with a live one are scored whole: only a call nobody waits for is stopped.
        if state.running and all(e.cancelled for e in state.running):
            raise _Stopped
        scores = self.inner.forward(batch)
        state.forwarded += batch.size
        return scores


class MicroBatcher:
    """Coalesces concurrent requests into shared batches on one worker thread (see the module doc).

    Use from one asyncio event loop: ``start()``, ``await submit(request)`` from any number of tasks,
    ``close()`` when done (queued requests are still scored; new ones are refused).
    """

    def __init__(self, scorer: RequestScorer, batching: BatchingOptions, queue: QueueOptions) -> None:
        self._state = _State()
        self._scorer = scorer.with_backend(_StopWhenAbandoned(scorer.backend, self._state))
        self._tokenizer = scorer.tokenizer
        self._batching = batching
        self.options = queue
        self.stats = QueueStats()
        self._cond = threading.Condition()
        self._throughput = _Throughput()
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._max_request_tokens = queue.max_request_tokens
        self._max_queue_tokens = queue.max_queue_tokens

    @property
    def max_request_tokens(self) -> int | None:
        """Tokens one request may plan at most (as configured, or calibrated by ``start``); ``None``: no cap."""
        return self._max_request_tokens

    @property
    def max_queue_tokens(self) -> int | None:
        """Tokens queued at most (as configured, or derived from the request cap); ``None``: no token bound."""
        if self._max_queue_tokens is None and self._max_request_tokens is not None:
            return QUEUED_REQUESTS_AT_CAP * self._max_request_tokens
        return self._max_queue_tokens

    @property
    def tokens_per_second(self) -> float:
        """Recent scoring throughput in real tokens per second (0 before the first call)."""
        return self._throughput.tokens_per_second

    @property
    def queued_windows(self) -> int:
        """Windows (query-chunk pairs) waiting for the worker."""
        return self._state.queued_windows

    @property
    def queued_tokens(self) -> int:
        """Tokens of the windows waiting for the worker."""
        return self._state.queued_tokens

    @property
    def queued_requests(self) -> int:
        """Requests waiting for the worker."""
        return len(self._state.queue)

    @property
    def alive(self) -> bool:
        """Whether the worker thread is running."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the worker thread, after calibrating the request cap if it is derived from ``max_request_seconds``.

        A calibration runs the model for about two short passes: call this from a thread, not an event loop.
        """
        if self._max_request_tokens is None and self.options.max_request_seconds is not None:
            self._max_request_tokens = self._calibrate(self.options.max_request_seconds)
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
        """Seconds until the queue and the call in progress have likely drained (1 to 60), from recent tokens/s."""
        rate = self._throughput.tokens_per_second
        if rate <= 0:
            return 1
        state = self._state
        ahead = state.queued_tokens + sum(e.work.tokens for e in state.running)
        return max(1, min(60, math.ceil(ahead / rate)))

    async def submit(self, request: ScoreRequest) -> Batched:
        """Plan ``request``'s work, queue it and wait for its scores.

        Raises:
            LimitExceededError: its planned tokens pass ``max_request_tokens`` (it is never queued).
            InputTooLongError: a text is over its limit and the request refuses cuts.
            OverloadedError: the queue holds too much work to take this request now.
            InferenceError: the worker is not running or the model failed on this request.
        """
        self._check_running()
        # Every document is a window at least: a queue too full for that many is refused before any tokenising,
        # so shedding an overload costs the server next to nothing.
        with self._cond:
            self._refuse_if_full(max(len(request.documents), 1), 0, exact=False)
        work = await self._plan(request)
        cap = self._max_request_tokens
        if cap is not None and work.tokens > cap:
            self.stats.refused_requests += 1
            counted = "" if work.complete else " (counting stopped there)"
            raise LimitExceededError(
                "request",
                work.tokens,
                cap,
                unit=f"tokens of model work in {work.windows} windows{counted}",
                fix=f"send fewer or shorter documents or fewer windows per document (max_chunks_per_doc), in "
                f"several requests; the server's cap is --max-request-tokens {cap}",
            )
        loop = asyncio.get_running_loop()
        entry = _Entry(request=request, future=loop.create_future(), loop=loop, enqueued=time.perf_counter(), work=work)
        with self._cond:
            self._check_running()
            self._refuse_if_full(work.windows, work.tokens, exact=True)
            state = self._state
            state.queue.append(entry)
            state.queued_windows += work.windows
            state.queued_tokens += work.tokens
            self._cond.notify_all()
        try:
            return await entry.future
        except asyncio.CancelledError:
            entry.cancelled = True
            self._forget(entry)
            raise

    def _refuse_if_full(self, windows: int, tokens: int, *, exact: bool) -> None:
        """``OverloadedError`` when ``windows`` windows of ``tokens`` tokens (``exact``, else at least that many
        windows) would pass the queue's bounds; a request alone bigger than a bound is still taken into an empty
        queue. Call with ``_cond`` held."""
        state = self._state
        max_windows, max_tokens = self.options.max_queue_pairs, self.max_queue_tokens
        full = state.queued_windows + windows > max_windows or (
            max_tokens is not None and state.queued_tokens + tokens > max_tokens
        )
        if state.queue and full:
            size = f"{windows} windows ({tokens} tokens)" if exact else f"{windows} windows at least"
            raise OverloadedError(
                f"the queue holds {state.queued_windows} windows ({state.queued_tokens} tokens); this request's "
                f"{size} would pass its bound of {max_windows} windows"
                + ("" if max_tokens is None else f" or {max_tokens} tokens"),
                retry_after=self.retry_after(),
                fix="retry after the Retry-After delay, or add replicas",
            )

    def _check_running(self) -> None:
        if self._state.closing or not self.alive:
            raise InferenceError(
                "the scoring worker is not running (the server is shutting down or its worker stopped)",
                fix="retry on another replica; if it persists, restart the server and read its log",
            )

    async def _plan(self, request: ScoreRequest) -> Work:
        """The request's windows and tokens; big requests are tokenised in a thread, not on the event loop.

        The tokenizer is only read, never reconfigured, so planning beside the worker is safe
        (engine/tokenizer.py). Counting stops just past the cap: refusing a huge request costs little.
        """
        stop_above = self._max_request_tokens
        if len(request.query) + sum(map(len, request.documents)) <= _INLINE_PLAN_CHARS:
            return plan_work(self._tokenizer, request, stop_above=stop_above)
        return await asyncio.to_thread(plan_work, self._tokenizer, request, stop_above=stop_above)

    def _forget(self, entry: _Entry) -> None:
        with self._cond:
            try:
                self._state.queue.remove(entry)
            except ValueError:
                return  # the worker already took it; the call is stopped at its next pass if nobody else waits
            self._state.queued_windows -= entry.work.windows
            self._state.queued_tokens -= entry.work.tokens
            self.stats.dropped_windows += entry.work.windows

    def _calibrate(self, seconds: float) -> int:
        """The request cap: tokens/s of one timed pass on this machine, times ``seconds``, at least two full batches.

        The floor keeps ordinary requests (on CPU 16,384 tokens: 32 full 512-token windows) admitted on a slow
        or busy machine, where a timing would otherwise refuse them; it then sets the longest wait instead.
        """
        floor = 2 * self._batching.max_batch_tokens
        request = _calibration_request()
        try:
            self._scorer.score([request], self._batching)  # pays for lazy initialisation, not timed
            started = time.perf_counter()
            (scored,) = self._scorer.score([request], self._batching)
            elapsed = time.perf_counter() - started
        except Exception:
            _log.exception("calibrating the request cap failed; using two batches (%d tokens)", floor)
            return floor
        rate = scored.usage.total_tokens / max(elapsed, 1e-6)
        self._throughput.add(scored.usage.total_tokens, elapsed)
        cap = max(floor, int(rate * seconds))
        _log.info("request cap: %d tokens (%.0f tokens/s measured x %.1f s)", cap, rate, seconds)
        return cap

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
                and state.queued_windows < fill
                and len(state.queue) < (options.max_batch_requests or 1 << 30)
            ):
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            taken: list[_Entry] = []
            windows = 0
            while state.queue and (not taken or windows + state.queue[0].work.windows <= options.max_cycle_pairs):
                if options.max_batch_requests is not None and len(taken) >= options.max_batch_requests:
                    break
                entry = state.queue.popleft()
                state.queued_windows -= entry.work.windows
                state.queued_tokens -= entry.work.tokens
                windows += entry.work.windows
                taken.append(entry)
            return taken

    def _run(self) -> None:
        while (taken := self._take()) is not None:
            live = [e for e in taken if not e.cancelled]
            self._count_dropped(sum(e.work.windows for e in taken if e.cancelled))
            if live:
                self._score(live)
                if self._stays_idle(IDLE_RELEASE_S):
                    release_free_memory()

    def _count_dropped(self, windows: int, *, stopped: bool = False) -> None:
        with self._cond:  # the event loop's thread counts too (``_forget``)
            self.stats.dropped_windows += windows
            self.stats.stopped_calls += stopped

    def _stays_idle(self, seconds: float) -> bool:
        """Wait until work is queued or ``seconds`` pass; whether the queue stayed empty all that time."""
        with self._cond:
            return not self._cond.wait_for(lambda: bool(self._state.queue) or self._state.closing, seconds)

    def _score(self, entries: list[_Entry]) -> None:
        started = time.perf_counter()
        state = self._state
        state.running, state.forwarded = entries, 0
        try:
            results = self._scorer.score([e.request for e in entries], self._batching)
        except _Stopped:
            # Planned windows not sent (an estimate with a result cache: its hits were never to be computed).
            self._count_dropped(max(0, sum(e.work.windows for e in entries) - state.forwarded), stopped=True)
            _log.info("stopped scoring %d request(s): their callers have gone", len(entries))
            return
        except Exception as exc:
            if len(entries) > 1:
                # One bad request must not fail the others it was batched with: score each alone.
                for entry in entries:
                    self._score([entry])
                return
            _resolve(entries[0], None, _as_inference_error(exc))
            return
        finally:
            state.running = []
        seconds = time.perf_counter() - started
        self._throughput.add(sum(r.usage.total_tokens for r in results), seconds)
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
