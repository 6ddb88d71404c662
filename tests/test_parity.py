"""Scores equal FlagEmbedding's algorithm and sentence-transformers CrossEncoder (fp32, |Δ| ≤ 1e-4).

Real models against reference implementations: slow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cases import LONG_QUERY, PAIRS
from crossrank import Reranker
from crossrank.engine.scorer import sigmoid
from reference import flag_scores, policies_agree, st_scores

pytestmark = pytest.mark.slow

TOLERANCE = 1e-4
ALL_PAIRS = [*PAIRS, (LONG_QUERY, "a short document about pandas")]


@pytest.fixture(scope="module", params=["english", "tiny-xlmr"])
def model_dir(request: pytest.FixtureRequest, english_model_dir: Path, tiny_xlmr_dir: Path) -> Path:
    return english_model_dir if request.param == "english" else tiny_xlmr_dir


# FlagEmbedding and sentence-transformers truncate long documents; aggregate="first" is that policy
# (crossrank's default, "max", scores them in windows: see tests/engine/test_long_documents.py).
@pytest.mark.parametrize("max_length", [64, 512])
def test_equal_to_flagembedding_algorithm(model_dir: Path, max_length: int) -> None:
    expected = flag_scores(model_dir, ALL_PAIRS, max_length)
    with Reranker(
        str(model_dir), device="cpu", dtype="float32", max_length=max_length, max_batch_size=4, aggregate="first"
    ) as reranker:
        got = reranker.compute_score(ALL_PAIRS)
        normalized = reranker.compute_score(ALL_PAIRS, normalize=True)
    np.testing.assert_allclose(got, expected, atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(normalized, 1 / (1 + np.exp(-np.asarray(expected))), atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("max_length", [64, 512])
def test_equal_to_sentence_transformers_where_policies_agree(model_dir: Path, max_length: int) -> None:
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(model_dir)
    pairs = [p for p in ALL_PAIRS if policies_agree(hf, *p, max_length)]
    assert len(pairs) >= len(PAIRS) - 1  # the long query is the case where they differ
    expected = st_scores(model_dir, pairs, max_length)
    with Reranker(str(model_dir), device="cpu", dtype="float32", max_length=max_length, aggregate="first") as reranker:
        got = reranker.score(pairs)
    np.testing.assert_allclose(got, expected, atol=TOLERANCE, rtol=0)


def test_batching_does_not_change_scores(english_reranker: Reranker) -> None:
    one_by_one = [english_reranker.compute_score(pair) for pair in PAIRS]
    batched = english_reranker.compute_score(PAIRS, batch_size=64)
    tiny_batches = english_reranker.compute_score(PAIRS, batch_size=2)
    np.testing.assert_allclose(batched, one_by_one, atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(tiny_batches, one_by_one, atol=TOLERANCE, rtol=0)


def test_rerank_scores_equal_compute_score(english_reranker: Reranker) -> None:
    query = "what is panda?"
    documents = [d for _, d in PAIRS]
    result = english_reranker.rerank(query, documents)
    expected = english_reranker.compute_score([(query, d) for d in documents])
    for item in result.results:
        assert item.score == pytest.approx(expected[item.index], abs=TOLERANCE)
        assert item.relevance_score == pytest.approx(1 / (1 + np.exp(-item.score)), abs=1e-12)


def test_sigmoid_is_exact_in_float64_at_both_tails() -> None:
    logits = np.array([-1000.0, -30.0, -8.1875, 0.0, 5.26171875, 30.0, 1000.0], dtype=np.float32)
    got = sigmoid(logits)
    assert got.dtype == np.float64
    assert got[0] == 0.0 and got[-1] == 1.0
    assert got[3] == 0.5
    # FlagEmbedding README values for bge-reranker-v2-m3 (normalize=True on its fp16 logits)
    assert got[2] == pytest.approx(0.00027803096387751553, rel=1e-12)
    assert got[4] == pytest.approx(0.9948403768236574, rel=1e-12)
    assert 0 < got[1] < got[2] and got[4] < got[5] < 1
