"""Soak: 14,000 distinct requests of mixed sizes on every rerank route; no memory, descriptor or thread leak.

The server's RSS, open file descriptors and threads are read from /proc when it is idle after a 4,000-request warm-up,
after 5,000 more and after 5,000 more again; the result cache is off (the default), so every request runs the model.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from reliability.load import THREAD_POOL_HEADROOM, Body, LoadReport, closed_loop, ms, percentile, settle
from server_process import metric, running_server

# Latency, memory and descriptor figures: measured alone on the machine (tests/run.py runs serial tests last).
pytestmark = [pytest.mark.slow, pytest.mark.serial]

WARM_UP = 4_000  # 2,000 before: the allocators' growth (below) comes mostly early
HALF = 5_000  # the soak's two halves, with a reading between them
CONCURRENCY = 8
# A leak grows RSS in step with the requests; the allocators' own growth comes in steps of ~15 MiB that level off (a
# 30,000-request run read +4.2% from 2,000 to 14,000 requests and +1% more by 30,000), and one whole 10,000-request
# soak read +5.1% on the development VM. It is native memory: Python objects traced in the server grew 1.8 MiB over
# 6,000 requests, and the tokenizer's word cache holds under 3 MiB when full. So the leak bound is on the second half
# alone: +2.5% over 5,000 requests catches a leak of ~4 KB a request, as +5% over 10,000 did, and early steps no longer
# fail it; the whole soak keeps a looser bound.
RSS_GROWTH_SECOND_HALF = 0.025
RSS_GROWTH = 0.075
# Share of the documents that are long (150-400 words: 240-630 tokens, the longer ones read in two windows). They cost
# most of the server's time: at one in twenty, some 6,000 long documents are still spread over about 40% of the
# requests, and the run takes less than half the time it took at one in four (31,000 long documents).
LONG_SHARE = 0.05
WORDS = ["panda", "bamboo", "river", "engine", "violin", "glacier", "market", "saturn", "bread", "tennis", "熊猫", "ü"]


def _text(rng: random.Random, i: int, long: bool) -> str:
    words = rng.choices(WORDS, k=rng.randint(150, 400) if long else rng.randint(1, 12))
    return f"{i} " + " ".join(words)


def _body(i: int) -> Body:
    """Request ``i``: 1-20 documents, one in twenty of them long (see ``LONG_SHARE``), distinct text."""
    rng = random.Random(i)
    query = f"query {i}: " + " ".join(rng.choices(WORDS, k=rng.randint(1, 6)))
    documents = [_text(rng, i, rng.random() < LONG_SHARE) for _ in range(rng.randint(1, 20))]
    route = i % 4
    if route == 0:
        return "/v2/rerank", {"query": query, "documents": documents, "model": "m"}
    if route == 1:
        return "/v1/rerank", {"query": query, "documents": [{"text": d} for d in documents], "return_documents": True}
    if route == 2:
        return "/rerank", {"query": query, "texts": documents, "raw_scores": bool(i % 3)}
    return "/rerank", {"query": query, "documents": documents}


def _check(body: Body, answer: Any) -> str | None:
    path, payload = body
    n = len(payload.get("documents") or payload["texts"])
    results = answer if isinstance(answer, list) else answer["results"]
    if sorted(r["index"] for r in results) != list(range(n)):
        return f"{path}: indices {[r['index'] for r in results]} for {n} documents"
    return None


def test_ten_thousand_mixed_requests_leak_no_memory_descriptors_or_threads(
    tiny_xlmr_dir: Path, record_figures: Callable[..., None]
) -> None:
    """14,000 mixed requests (1-20 documents, all routes): RSS +<2.5% over the last 5,000; no fd or thread leak."""
    args = ["-m", str(tiny_xlmr_dir), "--device", "cpu", "--max-wait-ms", "2", "--slow-ms", "100000"]
    with running_server([*args, "--cache-size", "0"]) as server:
        pid = server.process.pid
        warm = asyncio.run(closed_loop(server.url, _body, concurrency=CONCURRENCY, requests=WARM_UP, check=_check))
        before = settle(server.url, pid)
        halves = []
        for start in (WARM_UP, WARM_UP + HALF):
            load = closed_loop(
                server.url, _body, concurrency=CONCURRENCY, requests=HALF, start=start, check=_check, timeout=120
            )
            halves.append((asyncio.run(load), settle(server.url, pid)))
        (first, half), (second, after) = halves
        text = httpx.get(server.url + "/metrics").text
        log = server.log()

    soak = LoadReport(seconds=first.seconds + second.seconds, outcomes=first.outcomes + second.outcomes)
    outcomes = warm.outcomes + soak.outcomes
    statuses = dict(Counter(o.status for o in outcomes))
    latencies = soak.latencies(200)
    growth = after.rss_kib / before.rss_kib - 1
    second_half_growth = after.rss_kib / half.rss_kib - 1
    requests = WARM_UP + 2 * HALF
    routes = Counter(_body(i)[0] for i in range(requests))
    documents = sum(len(b.get("documents") or b["texts"]) for _, b in map(_body, range(requests)))
    record_figures(
        {
            "server": "tiny random XLM-R (2 layers, XLM-R tokenizer), CPU, result cache off",
            "requests": f"{WARM_UP:,} warm-up + 2 x {HALF:,}, closed loop, {CONCURRENCY} clients",
            "mix": f"1-20 documents, {LONG_SHARE:.0%} long (150-400 words, two windows over 512 tokens), routes "
            + ", ".join(f"{k} {v}" for k, v in sorted(routes.items())),
        },
        {
            "requests": len(outcomes),
            "documents scored": documents,
            "statuses": statuses,
            "wrong answers": len(soak.errors()) + len(warm.errors()),
            "seconds (after warm-up)": round(soak.seconds, 1),
            "p50/p99 ms": f"{ms(percentile(latencies, 50))} / {ms(percentile(latencies, 99))}",
            "RSS MiB after warm-up / half / end": (
                f"{before.mib()} / {half.mib()} / {after.mib()} ({growth:+.1%}; second half {second_half_growth:+.1%})"
            ),
            "fds after warm-up / end": f"{before.fds} / {after.fds}",
            "threads after warm-up / half / end": f"{before.threads} / {half.threads} / {after.threads}",
        },
    )
    assert statuses == {200: requests}, (warm.errors() + soak.errors())[:5]
    assert not warm.errors() and not soak.errors(), (warm.errors() + soak.errors())[:5]
    assert metric(text, "crossrank_pairs_scored_total") >= documents  # nothing answered from a cache
    assert second_half_growth < RSS_GROWTH_SECOND_HALF
    assert growth < RSS_GROWTH
    assert after.fds <= before.fds
    assert after.threads <= before.threads + THREAD_POOL_HEADROOM
    assert "Traceback" not in log
