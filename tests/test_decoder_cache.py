"""The result cache on a decoder reranker (the tiny Qwen3-Reranker of tests/decoders.py): its key holds the
instruction a request runs with and the model's family, so another instruction (or family) is computed afresh and
the same one is a hit; in process, and in a real redis-server shared by two rerankers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from crossrank import Reranker
from crossrank.families import FAMILIES
from crossrank.types import RerankResult
from redis_server import running_redis

QUERY = "what is a panda?"
DOCS = ["pandas eat bamboo", "Paris is the capital of France.", "the giant panda is a bear"]
FIRST = "Judge whether the passage names a capital city"
SECOND = "Judge whether the passage is about animals"
QWEN3_DEFAULT = FAMILIES["qwen3-reranker"].default_instruction


def _logits(result: RerankResult) -> dict[int, float]:
    return {r.index: r.score for r in result.results}


@pytest.fixture(scope="module")
def uncached(tiny_qwen3_dir: Path) -> Iterator[Reranker]:
    with Reranker(str(tiny_qwen3_dir), device="cpu", dtype="float32") as reranker:
        reranker.rerank("warm-up", ["warm-up"])  # the first forward pass pays for torch's lazy set-up
        yield reranker


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.slow)])
def cache(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, object]]:
    """The cache keywords of a Reranker: in process, or a fresh redis-server."""
    if request.param == "memory":
        yield {"cache_size": 100}
        return
    pytest.importorskip("redis", reason="the redis extra is in the dev extra")
    with running_redis(tmp_path) as redis:
        yield {"cache_url": redis.url()}


def test_each_instruction_is_computed_once(tiny_qwen3_dir: Path, cache: dict[str, object], uncached: Reranker) -> None:
    with Reranker(str(tiny_qwen3_dir), device="cpu", dtype="float32", **cache) as reranker:  # type: ignore[arg-type]
        first = reranker.rerank(QUERY, DOCS, instruction=FIRST)
        again = reranker.rerank(QUERY, DOCS, instruction=FIRST)
        second = reranker.rerank(QUERY, DOCS, instruction=SECOND)
        default = reranker.rerank(QUERY, DOCS)
        # No instruction runs with the family's default: the same key as that instruction given.
        named_default = reranker.rerank(QUERY, DOCS, instruction=QWEN3_DEFAULT)
    assert first.usage.cached_documents == 0
    assert again.usage.cached_documents == len(DOCS)
    assert _logits(again) == _logits(first)  # the very scores computed, from the cache
    assert second.usage.cached_documents == 0  # another instruction: computed afresh
    assert default.usage.cached_documents == 0
    assert named_default.usage.cached_documents == len(DOCS)
    assert _logits(named_default) == _logits(default)
    for result, instruction in ((first, FIRST), (second, SECOND), (default, None)):
        expected = _logits(uncached.rerank(QUERY, DOCS, instruction=instruction, use_cache=False))
        assert _logits(result) == {i: pytest.approx(score, abs=1e-6) for i, score in expected.items()}
    assert all(abs(_logits(first)[i] - _logits(second)[i]) > 1e-6 for i in range(len(DOCS)))


def test_the_family_is_part_of_the_fingerprint(tiny_qwen3_dir: Path, uncached: Reranker) -> None:
    with Reranker(str(tiny_qwen3_dir), device="cpu", dtype="float32", family="mxbai-rerank-v2") as mxbai:
        assert mxbai.fingerprint().values["family"] == "mxbai-rerank-v2"
        assert uncached.fingerprint().values["family"] == "qwen3-reranker"
        assert mxbai.fingerprint().digest != uncached.fingerprint().digest


@pytest.mark.slow
def test_two_families_of_one_checkpoint_share_no_redis_entry(tiny_qwen3_dir: Path, tmp_path: Path) -> None:
    """The same files read as two families, on one Redis: the second computes its own scores."""
    pytest.importorskip("redis", reason="the redis extra is in the dev extra")
    with running_redis(tmp_path) as redis:
        common = {"device": "cpu", "dtype": "float32", "cache_url": redis.url()}
        with Reranker(str(tiny_qwen3_dir), **common) as qwen3:  # type: ignore[arg-type]
            qwen3.rerank(QUERY, DOCS)
            assert qwen3.rerank(QUERY, DOCS).usage.cached_documents == len(DOCS)
        with Reranker(str(tiny_qwen3_dir), family="mxbai-rerank-v2", **common) as mxbai:  # type: ignore[arg-type]
            assert mxbai.rerank(QUERY, DOCS).usage.cached_documents == 0
