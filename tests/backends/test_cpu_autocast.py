"""dtype="auto" on CPU: bfloat16 autocast where the CPU has AMX, float32 elsewhere, within the accuracy gate."""

from __future__ import annotations

from pathlib import Path

import pytest
from scipy.stats import spearmanr

from cases import judged_pairs
from crossrank import Reranker
from crossrank.backends.torch import cpu_autocasts_bf16
from test_reranker import KEYWORD_TRAPS

pytestmark = pytest.mark.slow

needs_amx = pytest.mark.skipif(
    not cpu_autocasts_bf16(), reason="this CPU has no AMX: dtype='auto' stays float32 here (checked by the test above)"
)


@pytest.fixture(scope="module")
def english_auto(english_model_dir: Path) -> Reranker:
    return Reranker(str(english_model_dir), device="cpu")


def test_auto_follows_the_cpu_and_float32_stays_float32(english_auto: Reranker, english_reranker: Reranker) -> None:
    assert english_auto.dtype == ("bfloat16-autocast" if cpu_autocasts_bf16() else "float32")
    assert english_reranker.dtype == "float32"


@needs_amx
@pytest.mark.parametrize(("query", "relevant", "trap"), KEYWORD_TRAPS)
def test_autocast_keeps_the_top_1(english_auto: Reranker, query: str, relevant: str, trap: str) -> None:
    assert english_auto.rerank(query, [trap, relevant]).results[0].index == 1


@needs_amx
def test_autocast_ranks_like_float32_on_judged_data(
    english_auto: Reranker, english_reranker: Reranker, shared_data: Path
) -> None:
    pairs = judged_pairs(shared_data / "en_beir_dbpedia_subset", queries=8, docs=25)
    fast = english_auto.compute_score(pairs)
    exact = english_reranker.compute_score(pairs)
    assert spearmanr(fast, exact).statistic >= 0.99
    assert max(abs(a - b) for a, b in zip(fast, exact, strict=True)) < 0.5  # logits, not noise
