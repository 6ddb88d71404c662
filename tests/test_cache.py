"""The in-process result cache: exact hits, partial hits, bypass, option changes, and its bounds.

On the fake backend (``fake_reranker``, token-overlap scores): what is checked is that a hit returns the very
scores the backend gave and skips it, whatever those scores are."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from crossrank import Reranker
from crossrank.config import BatchingOptions, ChunkingOptions, TruncationOptions
from crossrank.engine.cache import CachedScorer, LRUScoreCache, cache_key
from crossrank.engine.observed import BatchStats, ObservedBackend
from crossrank.engine.scorer import ScoreRequest
from crossrank.errors import ConfigError

QUERY = "what is panda?"
DOCS = ["hi", "The giant panda is a bear native to China.", "Pandas is a Python library.", "bamboo " * 700]


@pytest.fixture
def counted(fake_reranker: Reranker) -> tuple[CachedScorer, list[BatchStats]]:
    passes: list[BatchStats] = []
    scorer = fake_reranker.scorer.with_backend(ObservedBackend(fake_reranker.scorer.backend, passes.append))
    return CachedScorer(scorer, LRUScoreCache(1000), {"model": "digest"}), passes


def _request(documents: list[str], **truncation: int) -> ScoreRequest:
    return ScoreRequest(query=QUERY, documents=documents, truncation=TruncationOptions(**truncation))


def test_hits_are_exactly_the_backends_scores_and_skip_it_fake_backend(
    counted: tuple[CachedScorer, list[BatchStats]], fake_reranker: Reranker
) -> None:
    scorer, passes = counted
    (first,) = scorer.score([_request(DOCS)], BatchingOptions())
    forwards = len(passes)
    (again,) = scorer.score([_request(DOCS)], BatchingOptions())
    assert len(passes) == forwards  # nothing reached the model
    assert again.logits.tolist() == first.logits.tolist()
    assert again.usage.cached_documents == len(DOCS) and again.usage.total_tokens == 0
    uncached = fake_reranker.scorer.score([_request(DOCS)], BatchingOptions())[0]
    assert again.logits.tolist() == uncached.logits.tolist()
    assert scorer.cache.stats.hits == len(DOCS) and scorer.cache.stats.misses == len(DOCS)


def test_partial_hits_score_only_the_missing_pairs_fake_backend(
    counted: tuple[CachedScorer, list[BatchStats]], fake_reranker: Reranker
) -> None:
    scorer, passes = counted
    scorer.score([_request(DOCS[:2])], BatchingOptions())
    before = sum(p.pairs for p in passes)
    mixed = ["new document about bears", DOCS[1], "another new one", DOCS[0]]
    (result,) = scorer.score([_request(mixed)], BatchingOptions())
    assert sum(p.pairs for p in passes) - before == 2
    assert result.usage.cached_documents == 2
    expected = fake_reranker.scorer.score([_request(mixed)], BatchingOptions())[0]
    assert result.logits.tolist() == pytest.approx(expected.logits.tolist(), abs=1e-5)


def test_options_and_model_are_part_of_the_key() -> None:
    base, m = _request(["d"]), {"model": "m"}
    assert cache_key(m, base, "d") == cache_key(m, _request(["other"]), "d")
    assert cache_key(m, base, "d") != cache_key(m, _request(["d"], max_length=128), "d")
    assert cache_key(m, base, "d") != cache_key({"model": "other model"}, base, "d")
    assert cache_key(m, base, "d") != cache_key({**m, "dtype": "int8"}, base, "d")
    assert cache_key(m, base, "d") != cache_key(m, base, "e")
    flipped = ScoreRequest(query="d", documents=["q"], truncation=TruncationOptions())
    assert cache_key(m, base, "d") != cache_key(m, flipped, QUERY)
    for chunking in (ChunkingOptions(aggregate="first"), ChunkingOptions(max_chunks_per_doc=3)):
        assert cache_key(m, base, "d") != cache_key(m, dataclasses.replace(base, chunking=chunking), "d")


def test_use_cache_false_scores_afresh_and_stores_nothing_fake_backend(
    counted: tuple[CachedScorer, list[BatchStats]],
) -> None:
    scorer, passes = counted
    request = ScoreRequest(query=QUERY, documents=DOCS[:2], truncation=TruncationOptions(), use_cache=False)
    scorer.score([request], BatchingOptions())
    scorer.score([request], BatchingOptions())
    assert sum(p.pairs for p in passes) == 4
    assert len(scorer.cache) == 0  # type: ignore[arg-type]


def test_lru_stays_within_its_bounds_under_unique_keys() -> None:
    cache = LRUScoreCache(max_entries=100)
    for i in range(1000):
        cache.put_many([(f"key-{i}", [float(i)])])
        assert len(cache) <= 100
    assert cache.get_many(["key-999", "key-0"]) == [[999.0], None]
    cache.get_many(["key-900"])  # used: survives the next evictions
    cache.put_many([(f"more-{i}", [0.0]) for i in range(99)])
    assert cache.get_many(["key-900", "key-901"]) == [[900.0], None]
    small = LRUScoreCache(max_entries=10_000, max_bytes=5_000)
    small.put_many([(f"k{i}", [1.0, 2.0]) for i in range(1000)])
    assert small.bytes <= 5_000 and 0 < len(small) < 1000


def test_reranker_with_a_cache_fake_backend(fake_model_dir: Path, fake_reranker: Reranker) -> None:
    with Reranker(str(fake_model_dir), backend="fake", cache_size=100) as cached:
        first = cached.rerank(QUERY, DOCS)
        second = cached.rerank(QUERY, DOCS)
        assert second.usage.cached_documents == len(DOCS)
        assert second.results == first.results == fake_reranker.rerank(QUERY, DOCS).results
        assert cached.rerank(QUERY, DOCS, use_cache=False).usage.cached_documents == 0


@pytest.mark.parametrize(
    "kwargs",
    [{"cache_size": -1}, {"cache_url": "http://localhost"}, {"cache_url": "redis://x", "cache_ttl": 0}],
)
def test_bad_cache_options_fake_backend(fake_model_dir: Path, kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        Reranker(str(fake_model_dir), backend="fake", **kwargs)  # type: ignore[arg-type]
