"""The result cache in a real redis-server: shared by two server processes, TTL, partial hits, outages."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from crossrank import Reranker
from redis_server import RedisServer, running_redis
from server_process import metric, running_server, running_servers

pytest.importorskip("redis", reason="the redis extra is in the dev extra")

pytestmark = pytest.mark.slow

QUERY = "what is panda?"
DOCS = ["hi", "The giant panda is a bear native to China.", "Pandas is a Python library.", "bamboo forests"]


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path) as server:
        yield server


def _serve(model: Path, redis: RedisServer) -> list[str]:
    return ["-m", str(model), "--device", "cpu", "--max-wait-ms", "5", "--cache-url", redis.url(), "--cache-ttl", "600"]


def _rerank(url: str, documents: list[str]) -> list[tuple[int, float]]:
    response = httpx.post(f"{url}/rerank", json={"query": QUERY, "texts": documents, "raw_scores": True}, timeout=60)
    assert response.status_code == 200, response.text
    return sorted((r["index"], r["score"]) for r in response.json())


def _metrics(url: str) -> str:
    return httpx.get(f"{url}/metrics", timeout=10).text


def _uncached(reranker: Reranker, documents: list[str]) -> list[tuple[int, float]]:
    return sorted((r.index, r.score) for r in reranker.rerank(QUERY, documents, use_cache=False).results)


def test_two_servers_share_one_cache(redis: RedisServer, english_model_dir: Path, english_reranker: Reranker) -> None:
    args = _serve(english_model_dir, redis)
    with running_servers(2, args) as (first, second):
        warm = metric(_metrics(first.url), "crossrank_pairs_scored_total")  # the warm-up pass, if it counts
        scored = _rerank(first.url, DOCS)
        assert metric(_metrics(first.url), "crossrank_pairs_scored_total") == warm + len(DOCS)
        before = metric(_metrics(second.url), "crossrank_pairs_scored_total")
        assert _rerank(second.url, DOCS) == scored  # served from Redis, bit for bit
        text = _metrics(second.url)
        assert metric(text, "crossrank_pairs_scored_total") == before  # the second never ran the model
        assert metric(text, "crossrank_cache_hits_total", cache="redis") == len(DOCS)
    assert [(i, pytest.approx(s, abs=1e-5)) for i, s in scored] == _uncached(english_reranker, DOCS)


def test_partial_hits_in_redis_equal_an_uncached_run(
    redis: RedisServer, english_model_dir: Path, english_reranker: Reranker
) -> None:
    with Reranker(str(english_model_dir), device="cpu", dtype="float32", cache_url=redis.url()) as cached:
        cached.rerank(QUERY, DOCS[:2])
        mixed = ["a new document about bears", DOCS[1], DOCS[0], "another new one"]
        result = cached.rerank(QUERY, mixed)
    assert result.usage.cached_documents == 2
    got = sorted((r.index, r.score) for r in result.results)
    assert [(i, pytest.approx(s, abs=1e-5)) for i, s in got] == _uncached(english_reranker, mixed)


def test_entries_expire_after_their_ttl(redis: RedisServer, english_model_dir: Path) -> None:
    import redis as redis_py

    client = redis_py.Redis.from_url(redis.url())
    with Reranker(
        str(english_model_dir), device="cpu", dtype="float32", cache_url=redis.url(), cache_ttl=1, cache_prefix="t:"
    ) as rr:
        rr.rerank(QUERY, DOCS)
        keys = client.keys("t:*")
        assert len(keys) == len(DOCS)
        assert all(0 < client.pttl(key) <= 1000 for key in keys)
        assert rr.rerank(QUERY, DOCS).usage.cached_documents == len(DOCS)
        deadline = time.monotonic() + 10
        while client.keys("t:*") and time.monotonic() < deadline:
            time.sleep(0.1)
        again = rr.rerank(QUERY, DOCS)
    assert again.usage.cached_documents == 0  # expired: scored afresh
    assert again.usage.total_tokens > 0


def test_a_redis_outage_degrades_to_computing(
    redis: RedisServer, english_model_dir: Path, english_reranker: Reranker
) -> None:
    with running_server(_serve(english_model_dir, redis)) as server:
        scored = _rerank(server.url, DOCS)
        redis.stop()  # killed mid-test
        assert _rerank(server.url, DOCS) == scored  # computed instead: still answered, same scores
        text = _metrics(server.url)
        assert metric(text, "crossrank_cache_errors_total", cache="redis") >= 1
        assert metric(text, "crossrank_pairs_scored_total") >= 2 * len(DOCS)
        assert "result cache at" in server.log() and "unavailable" in server.log()
        redis.start()  # back on the same port: the cache works again, no restart needed
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            _rerank(server.url, DOCS)
            if metric(_metrics(server.url), "crossrank_cache_hits_total", cache="redis") > 0:
                break
            time.sleep(0.5)
        assert metric(_metrics(server.url), "crossrank_cache_hits_total", cache="redis") > 0
    assert [(i, pytest.approx(s, abs=1e-5)) for i, s in scored] == _uncached(english_reranker, DOCS)


def test_entries_crossrank_did_not_write_are_misses_counted_and_deleted(
    redis: RedisServer, fake_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import redis as redis_py

    client = redis_py.Redis.from_url(redis.url())
    garbage = [b"not json", b'{"a": 1}', b"[1]", b"[" * 100_000, b"\xff\xfe", b'"text"', b"[0.5, [0, 1, 2], 1]"]
    with Reranker(str(fake_model_dir), backend="fake", cache_url=redis.url(), cache_prefix="g:") as rr:
        first = [(r.index, r.score) for r in rr.rerank(QUERY, DOCS).results]
        keys = sorted(client.keys("g:*"))
        assert len(keys) == len(DOCS)
        for round_ in range(0, len(garbage), len(DOCS)):  # every kind of garbage, a request's worth at a time
            for key, value in zip(keys, garbage[round_ : round_ + len(DOCS)], strict=False):
                client.set(key, value)
            stats = rr.scorer.cache.stats  # type: ignore[attr-defined]
            errors = stats.errors
            again = rr.rerank(QUERY, DOCS)  # was a 503 (JSONDecodeError, IndexError) through the server
            assert [(r.index, r.score) for r in again.results] == first
            assert stats.errors > errors
            assert all(client.get(key) not in garbage for key in keys)  # deleted, then written afresh
        assert rr.rerank(QUERY, DOCS).usage.cached_documents == len(DOCS)
