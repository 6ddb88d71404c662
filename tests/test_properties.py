"""Property tests of the engine: any Unicode query and documents give a valid result or a typed error.

They run on the fake backend (token-overlap scores, ``fake_reranker``): the properties are the engine's, not the
model's. The one that batching never changes a score also runs on the tiny random model (slow)."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crossrank import InputError, Reranker, RerankResult, TruncationWarning

# Every code point, lone surrogates (what JSON "\ud800" decodes to) and control characters included.
ANY_CHARACTER = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())
TEXT = st.text(ANY_CHARACTER, max_size=300)
FIXTURE_REUSED = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def check_result(result: RerankResult, documents: list[str], top_n: int | None = None) -> None:
    expected = len(documents) if top_n is None else min(top_n, len(documents))
    assert len(result.results) == expected
    indices = [r.index for r in result.results]
    assert len(set(indices)) == expected and all(0 <= i < len(documents) for i in indices)
    scores = [r.score for r in result.results]
    assert scores == sorted(scores, reverse=True)
    for item in result.results:
        assert math.isfinite(item.score)
        assert 0.0 <= item.relevance_score <= 1.0
        assert item.document == documents[item.index]
    assert result.usage.total_tokens >= 0


@FIXTURE_REUSED
@given(query=TEXT, documents=st.lists(TEXT, max_size=6), top_n=st.none() | st.integers(1, 8))
def test_any_unicode_ranks_fake_backend(
    fake_reranker: Reranker, query: str, documents: list[str], top_n: int | None
) -> None:
    check_result(fake_reranker.rerank(query, documents, top_n=top_n), documents, top_n)


def _scores_like_one_pair_at_a_time(reranker: Reranker, pairs: list[tuple[str, str]]) -> None:
    together = reranker.score(pairs)
    alone = [reranker.score([pair])[0] for pair in pairs]
    assert together == pytest.approx(alone, abs=1e-4)  # batching and padding never change a score


@FIXTURE_REUSED
@given(pairs=st.lists(st.tuples(TEXT, TEXT), min_size=1, max_size=6))
def test_any_unicode_scores_like_one_pair_at_a_time_fake_backend(
    fake_reranker: Reranker, pairs: list[tuple[str, str]]
) -> None:
    _scores_like_one_pair_at_a_time(fake_reranker, pairs)  # the engine keeps each pair's row


@pytest.mark.slow
@FIXTURE_REUSED
@given(pairs=st.lists(st.tuples(TEXT, TEXT), min_size=1, max_size=6))
def test_any_unicode_scores_like_one_pair_at_a_time(tiny_reranker: Reranker, pairs: list[tuple[str, str]]) -> None:
    _scores_like_one_pair_at_a_time(tiny_reranker, pairs)  # and the model's attention mask hides the padding


@FIXTURE_REUSED
@given(
    query=st.one_of(st.integers(), st.none(), st.lists(st.text(max_size=3), max_size=2), st.binary(max_size=5)),
    documents=st.one_of(st.none(), st.text(max_size=5), st.lists(st.one_of(st.integers(), st.none()), min_size=1)),
)
def test_wrong_types_are_a_typed_error_fake_backend(fake_reranker: Reranker, query: object, documents: object) -> None:
    with pytest.raises(InputError):
        fake_reranker.rerank(query, documents)  # type: ignore[arg-type]


def test_megabyte_strings_fake_backend(fake_reranker: Reranker) -> None:
    megabyte = "panda bamboo 熊猫 🐼 " * 50_000
    with pytest.warns(TruncationWarning, match="query was cut"):
        result = fake_reranker.rerank(megabyte, [megabyte, "short"])
    check_result(result, [megabyte, "short"])
    assert result.usage.truncated_queries == 1
    assert result.usage.truncated_documents == 1  # beyond max_chunks_per_doc windows
