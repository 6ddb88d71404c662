"""Overload: an open-loop load at more than 4x the server's measured capacity for 60 s.

Every answer must be 200 or 429 with Retry-After; accepted requests' p99 latency stays under a bound derived from the
queue bound; the queue and the server's memory stay bounded; once the load stops, single requests are as fast as
before it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from reliability.load import (
    THREAD_POOL_HEADROOM,
    Body,
    LoadReport,
    Sampler,
    closed_loop,
    ms,
    open_loop,
    percentile,
    settle,
    single_latencies,
    stolen_seconds,
)
from server_process import metric, running_server

# Latency, memory and descriptor figures: measured alone on the machine (tests/run.py runs serial tests last).
pytestmark = [pytest.mark.slow, pytest.mark.serial]

DURATION_S = 60.0
OVERLOAD = 4.5  # offered rate / capacity; at least 4x must be reached
MAX_QUEUE_PAIRS = 128
DOCUMENTS = 8  # per request: MAX_QUEUE_PAIRS / DOCUMENTS requests fit in the queue
# Accepted requests wait for at most the queue (MAX_QUEUE_PAIRS) and the scoring call in progress (which took at most
# as many pairs from the queue): 2 * MAX_QUEUE_PAIRS pairs ahead of them. The CPUs are shared with the rejected
# requests and the load generator, so the bound allows twice the time the model alone would take, plus 0.5 s.
MARGIN = 2.0
SLACK_S = 0.5
# Memory: shedding must not make the server's memory follow the offered load. The peak over the whole load is held
# to a ceiling over the idle server's RSS (seen: 1.26-1.34x, the larger batches' working set plus allocator arenas
# that come and go), and once the load stops it must give that back (seen: +1.5-5.6%, warmer pools). Comparing the
# load's late peak with its early peak instead was flaky: one arena more late in the run is +8% and is no leak.
# Per-request leaks are test_soak's to find (10,000 requests against a warmed-up baseline).
RSS_PEAK = 1.5
RSS_SETTLED = 1.15
# A shared VM can stop for seconds, and requests in flight then wait that long whatever the server does. CPU time
# the hypervisor stole during the load is added to the latency bound, and arrivals during it may find the generator
# at its bound; without steal the assertions are as strict as before. (Two CI failures first blamed on steal were the
# old httpx generator collapsing after a stall: see load.py. After a 3 s SIGSTOP of the server at this load, the
# aiohttp generator's answers were back to the usual latencies within 3 s.)
# Recovery: single requests after the load must be as fast as before it. One CI run read all 20 of them at 2.3x their
# baseline right after a load with 3.7 s of steal; it did not reproduce on the development VM (after/before 0.89-0.98),
# and nothing the server keeps from a load touches a single request's path (the throughput average only sets
# Retry-After). So recovery gets RECOVERY_TRIES tries RECOVERY_PAUSE_S apart, each try's median recorded: a server
# that stays slow fails them all.
RECOVERY_TRIES = 3
RECOVERY_PAUSE_S = 5.0


def _body(i: int) -> Body:
    documents = [f"document {j} about topic {i % 97}: " + "some words of text " * (3 + (i + j) % 5) for j in range(8)]
    return "/v2/rerank", {"query": f"what is topic {i % 97}?", "documents": documents}


def _recovery(url: str, single: Body, *, within: float) -> list[float]:
    """Median latency of 20 single requests, tried up to RECOVERY_TRIES times until it is ``within`` seconds."""
    medians: list[float] = []
    while len(medians) < RECOVERY_TRIES and (not medians or medians[-1] > within):
        if medians:
            time.sleep(RECOVERY_PAUSE_S)
        medians.append(percentile(single_latencies(url, single, 20), 50))
    return medians


def test_four_times_capacity_is_shed_with_429_and_accepted_latency_stays_bounded(
    english_model_dir: Path, record_figures: Callable[..., None]
) -> None:
    """4x+ capacity for 60 s: only 200 or 429 + Retry-After, accepted p99 bounded, queue and RSS bounded, recovers."""
    args = ["-m", str(english_model_dir), "--device", "cpu", "--max-wait-ms", "5", "--slow-ms", "100000"]
    args += ["--max-queue-pairs", str(MAX_QUEUE_PAIRS), "--max-documents", str(MAX_QUEUE_PAIRS)]
    with running_server(args) as server:
        pid = server.process.pid
        single = _body(10_000)
        single_latencies(server.url, single, 5)  # warm
        baseline = single_latencies(server.url, single, 20)

        capacity = asyncio.run(closed_loop(server.url, _body, concurrency=8, seconds=6))
        assert set(capacity.statuses()) == {200}, capacity.errors()[:5]
        requests_per_s = capacity.rate(200)
        pairs_per_s = requests_per_s * DOCUMENTS
        bound_s = MARGIN * 2 * MAX_QUEUE_PAIRS / pairs_per_s + SLACK_S
        before = settle(server.url, pid)

        async def overload() -> tuple[LoadReport, Sampler]:
            sampler = Sampler(server.url, pid)
            async with sampler.running():
                report = await open_loop(
                    server.url, _body, rate=OVERLOAD * requests_per_s, seconds=DURATION_S, max_in_flight=512
                )
            return report, sampler

        report, sampler = asyncio.run(overload())
        after = settle(server.url, pid)
        recovery_stolen = stolen_seconds()
        recovered = _recovery(server.url, single, within=2 * percentile(baseline, 50))
        recovery_stolen = stolen_seconds() - recovery_stolen
        text = httpx.get(server.url + "/metrics").text
        log = server.log()

    statuses = report.statuses()
    accepted = report.latencies(200)
    outcomes = report.outcomes
    without_retry_after = sum(o.status == 429 and not (o.retry_after or "").isdigit() for o in outcomes)
    offered = len(outcomes) / report.seconds
    rss_peak = max(sampler.rss_kib)
    stolen_s = sampler.stolen_s
    record_figures(
        {
            "server": f"MiniLM-L6 English, CPU, --max-queue-pairs {MAX_QUEUE_PAIRS}, --max-wait-ms 5",
            "request": f"/v2/rerank, {DOCUMENTS} documents of 20-40 words",
            "capacity run": "closed loop, 8 clients, 6 s",
            "load": f"open loop at {OVERLOAD}x capacity for {DURATION_S:.0f} s, at most 512 in flight",
            "p99 bound": f"{MARGIN} x 2 x max_queue_pairs / capacity pairs/s + {SLACK_S} s",
        },
        {
            "capacity": f"{requests_per_s:.1f} req/s ({pairs_per_s:.0f} pairs/s)",
            "offered": f"{offered:.1f} req/s ({offered / requests_per_s:.1f}x), {len(outcomes)} requests",
            "not sent (generator at its bound)": report.not_sent,
            "statuses": statuses,
            "429 without Retry-After": without_retry_after,
            "accepted p50/p99 ms": f"{ms(percentile(accepted, 50))} / {ms(percentile(accepted, 99))}",
            "p99 bound ms": ms(bound_s),
            "CPU time stolen by the hypervisor during the load s (added to the bound)": round(stolen_s, 2),
            "generator lag p99 ms": ms(percentile([o.lag for o in outcomes], 99)),
            "queue pairs max (bound)": f"{max(sampler.queue_pairs):.0f} ({MAX_QUEUE_PAIRS})",
            "server RSS MiB before / peak during the load / settled": (
                f"{before.mib()} / {rss_peak / 1024:.1f} ({rss_peak / before.rss_kib:.2f}x) / {after.mib()} "
                f"({after.rss_kib / before.rss_kib:.2f}x)"
            ),
            "threads before/after": f"{before.threads}/{after.threads}",
            "fds before/after": f"{before.fds}/{after.fds}",
            "single request p50 ms before / after (each try)": (
                f"{ms(percentile(baseline, 50))} / {', '.join(str(ms(m)) for m in recovered)}"
            ),
            "CPU time stolen by the hypervisor during the recovery tries s": round(recovery_stolen, 2),
        },
    )
    assert set(statuses) <= {200, 429}, report.errors()[:5]
    assert statuses.get(429, 0) > 0 and statuses.get(200, 0) > 0
    assert without_retry_after == 0
    assert offered >= 4 * requests_per_s
    assert report.not_sent <= OVERLOAD * requests_per_s * stolen_s
    assert percentile(accepted, 99) <= bound_s + stolen_s
    assert max(sampler.queue_pairs) <= MAX_QUEUE_PAIRS
    assert rss_peak <= RSS_PEAK * before.rss_kib
    assert after.rss_kib <= RSS_SETTLED * before.rss_kib
    assert metric(text, "crossrank_overloaded_requests_total") == statuses[429]
    assert after.threads <= before.threads + THREAD_POOL_HEADROOM and after.fds <= before.fds
    assert recovered[-1] <= 2 * percentile(baseline, 50)
    assert "Traceback" not in log
