"""A bounded HTTP load generator (asyncio + aiohttp, loopback only) and readings of a server process.

``closed_loop`` keeps ``concurrency`` requests outstanding for a fixed time (to measure capacity);
``open_loop`` sends at a fixed arrival rate for a fixed time whatever the answers (to overload), with
at most ``max_in_flight`` requests outstanding so the generator itself stays bounded. Each request's
status, ``Retry-After`` and latency are kept; ``Sampler`` reads the server's queue gauge and its
``/proc`` figures while the load runs.

The generator uses aiohttp, not httpx: httpx's connection pool does work proportional to the connections it holds
for every request, so once a stall (a slow VM, a GC pause) left a few hundred requests outstanding, the generator
took a whole core, answers were read seconds late and it never caught up (measured: a 3 s server stall at 4.5x
capacity left the generator at 100% CPU for the remaining 30 s, "accepted" latencies at 25 s, while the server idled).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from server_process import metric

# A request to send: (path, JSON body).
Body = tuple[str, dict[str, Any]]
MakeBody = Callable[[int], Body]
# Checks a 200 answer's JSON against what was sent: a description of what is wrong, or None.
Check = Callable[[Body, Any], "str | None"]

TRANSPORT_ERROR = 0  # status recorded when no HTTP answer came back
# Off-loop work (body parsing, planning long requests) runs on asyncio's default executor, whose threads start lazily,
# up to min(32, CPUs + 4), as concurrency peaks: one soak read 12 threads after warm-up and 13 at the end. That is a
# pool filling, not a leak; a leak grows with the requests, past this headroom.
THREAD_POOL_HEADROOM = min(32, (os.cpu_count() or 1) + 4)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One request: when it was sent (seconds into the run), its status, latency and Retry-After."""

    sent: float
    status: int
    seconds: float
    retry_after: str | None = None
    error: str | None = None
    lag: float = 0.0  # how late the generator sent it against its schedule (open loop)


@dataclass(slots=True)
class LoadReport:
    """What a run sent and got back."""

    seconds: float
    outcomes: list[Outcome] = field(default_factory=list)
    not_sent: int = 0  # open loop: arrivals skipped because max_in_flight requests were outstanding

    def statuses(self) -> dict[int, int]:
        return dict(sorted(Counter(o.status for o in self.outcomes).items()))

    def latencies(self, status: int = 200) -> list[float]:
        return sorted(o.seconds for o in self.outcomes if o.status == status)

    def rate(self, status: int | None = None) -> float:
        """Requests per second over the run (of one status, or all sent)."""
        n = len(self.outcomes) if status is None else sum(o.status == status for o in self.outcomes)
        return n / self.seconds

    def errors(self) -> list[str]:
        return [f"{o.status}: {o.error}" for o in self.outcomes if o.error]


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of ``values`` (0 when empty)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


async def _send(
    client: aiohttp.ClientSession, url: str, body: Body, t0: float, lag: float = 0.0, check: Check | None = None
) -> Outcome:
    path, payload = body
    started = time.perf_counter()
    try:
        async with client.post(url + path, json=payload) as response:
            status, retry_after = response.status, response.headers.get("retry-after")
            content = await response.read()
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        return Outcome(started - t0, TRANSPORT_ERROR, time.perf_counter() - started, error=repr(exc), lag=lag)
    seconds = time.perf_counter() - started
    error = None if status in (200, 429) else content[:300].decode(errors="replace")
    if check is not None and status == 200:
        error = check(body, json.loads(content))
    return Outcome(started - t0, status, seconds, retry_after, error, lag)


def _client(connections: int, timeout: float) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=connections)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout))


async def closed_loop(
    url: str,
    make_body: MakeBody,
    *,
    concurrency: int,
    seconds: float = math.inf,
    requests: int | None = None,
    start: int = 0,
    check: Check | None = None,
    timeout: float = 60,
) -> LoadReport:
    """``concurrency`` workers, each sending its next request as soon as the last one is answered.

    Runs for ``seconds`` or until ``requests`` were sent; bodies are ``make_body(start)``, ``make_body(start + 1)``...
    ``check`` looks at every 200 answer (a mismatch is kept in ``Outcome.error``).
    """
    report = LoadReport(seconds=seconds)
    end = start + requests if requests is not None else 1 << 62
    counter = iter(range(start, end))
    t0 = time.perf_counter()

    async def worker(client: aiohttp.ClientSession) -> None:
        while time.perf_counter() - t0 < seconds and (i := next(counter, None)) is not None:
            report.outcomes.append(await _send(client, url, make_body(i), t0, check=check))

    async with _client(concurrency, timeout) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    report.seconds = time.perf_counter() - t0
    return report


async def open_loop(
    url: str, make_body: MakeBody, *, rate: float, seconds: float, max_in_flight: int, timeout: float = 60
) -> LoadReport:
    """Send request ``i`` at ``i / rate`` seconds for ``seconds``, answered or not (at most ``max_in_flight`` open).

    Latency is measured from the moment each request is sent; how late the generator was against its
    schedule is kept apart (``Outcome.lag``), so a busy client does not pass for a slow server.
    """
    report = LoadReport(seconds=seconds)
    in_flight: set[asyncio.Task[Outcome]] = set()
    t0 = time.perf_counter()

    def done(task: asyncio.Task[Outcome]) -> None:
        in_flight.discard(task)
        report.outcomes.append(task.result())

    async with _client(max_in_flight, timeout) as client:
        for i in range(math.floor(rate * seconds)):
            due = t0 + i / rate
            now = time.perf_counter()
            if due > now:
                await asyncio.sleep(due - now)
            if len(in_flight) >= max_in_flight:
                report.not_sent += 1
                continue
            task = asyncio.create_task(_send(client, url, make_body(i), t0, max(0.0, time.perf_counter() - due)))
            in_flight.add(task)
            task.add_done_callback(done)
        report.seconds = time.perf_counter() - t0  # the sending phase: the offered rate is over it
        while in_flight:
            await asyncio.gather(*in_flight)
    return report


@dataclass(frozen=True, slots=True)
class ProcessFigures:
    """A process's resident memory (KiB), open file descriptors and threads, from /proc."""

    rss_kib: int
    fds: int
    threads: int

    @classmethod
    def of(cls, pid: int) -> ProcessFigures:
        status = dict(
            line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
        )
        return cls(
            rss_kib=int(status["VmRSS"].split()[0]),
            fds=len(os.listdir(f"/proc/{pid}/fd")),
            threads=int(status["Threads"]),
        )

    def mib(self) -> float:
        return round(self.rss_kib / 1024, 1)


def stolen_seconds() -> float:
    """CPU time the hypervisor has taken from this VM so far, per CPU (/proc/stat's steal); 0 where unknown.

    On a shared VM the whole machine can stop for seconds; no server bound holds through that, so tests that bound
    latency allow for the time stolen while they measured.
    """
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK") / (os.cpu_count() or 1)
    except (OSError, IndexError, ValueError):
        return 0.0


@dataclass(slots=True)
class Sampler:
    """Reads a server's queue gauges (/metrics) and its /proc figures every ``interval`` seconds.

    ``stolen_s`` is the CPU time per CPU the hypervisor took while it ran (see ``stolen_seconds``).
    """

    url: str
    pid: int
    interval: float = 0.25
    queue_pairs: list[float] = field(default_factory=list)
    queue_requests: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    threads: list[int] = field(default_factory=list)
    stolen_s: float = 0.0

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            while True:
                text = (await client.get(self.url + "/metrics")).text
                self.queue_pairs.append(metric(text, "crossrank_queue_pairs"))
                self.queue_requests.append(metric(text, "crossrank_queue_requests"))
                figures = ProcessFigures.of(self.pid)
                self.rss_kib.append(figures.rss_kib)
                self.threads.append(figures.threads)
                await asyncio.sleep(self.interval)

    @contextlib.asynccontextmanager
    async def running(self) -> Any:
        task = asyncio.create_task(self._run())
        stolen = stolen_seconds()
        try:
            yield self
        finally:
            self.stolen_s = stolen_seconds() - stolen
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def settle(url: str, pid: int, *, seconds: float = 15) -> ProcessFigures:
    """The server's /proc figures once its queue is empty and no request is in flight (quiescent)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        text = httpx.get(url + "/metrics", timeout=30).text
        idle = metric(text, "crossrank_queue_requests") == 0 and metric(text, "crossrank_requests_in_flight") == 0
        if idle:
            break
        time.sleep(0.1)
    time.sleep(1.0)  # let closed connections' sockets go, and the idle worker hand freed memory back (0.5 s)
    return ProcessFigures.of(pid)


def single_latencies(url: str, body: Body, n: int) -> list[float]:
    """Latency of ``n`` requests sent one after another (nothing else in flight)."""
    out = []
    with httpx.Client(timeout=60) as client:
        for _ in range(n):
            started = time.perf_counter()
            response = client.post(url + body[0], json=body[1])
            out.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text
    return out
