"""dtype="auto" on CPU: the measured mode runs, and both bfloat16 modes it may choose pass the accuracy gate.

The gate is checked on every CPU, whatever this one measured: where bfloat16 is emulated it is slow but rounds
alike, and the modes are forced here so the gate holds wherever ``auto`` may pick them (BENCHMARKS.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from scipy.stats import spearmanr

from cases import judged_pairs
from crossrank import Reranker
from crossrank.backends import torch as torch_backend
from crossrank.backends.cpu_mode import CPU_MODES, GATED_MODES, CpuModeDecision, cpu_mode_of
from test_reranker import KEYWORD_TRAPS

pytestmark = pytest.mark.slow

# The gate as shipped, read at import: conftest closes it for the other tests while they run.
GATES = dict(GATED_MODES)


@pytest.fixture(scope="module")
def english_auto(english_model_dir: Path) -> Iterator[Reranker]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(GATED_MODES, "bert", GATES["bert"])
        reranker = Reranker(str(english_model_dir), device="cpu")
    with reranker:
        yield reranker


@pytest.fixture(scope="module", params=sorted(GATES["bert"] & set(CPU_MODES)))
def english_reduced(request: pytest.FixtureRequest, english_model_dir: Path) -> Iterator[Reranker]:
    """The English model in a bfloat16 mode, as ``auto`` runs it when it measured that mode fastest."""
    decision = CpuModeDecision(request.param, {"float32": 1.0, request.param: 3.0}, "measured")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch_backend, "measured_cpu_mode", lambda folder: decision)
        reranker = Reranker(str(english_model_dir), device="cpu")
    assert reranker.dtype == request.param
    with reranker:
        yield reranker


def test_auto_runs_what_it_measured_and_float32_stays_float32(
    english_auto: Reranker, english_reranker: Reranker
) -> None:
    decision = cpu_mode_of(english_auto.scorer.backend)
    assert decision is not None and decision["source"] != "not gated"
    assert decision["mode"] in ("float32", *(GATES["bert"] & set(CPU_MODES)))
    assert english_auto.dtype == english_auto.fingerprint().values["dtype"] == decision["mode"]
    assert english_reranker.dtype == "float32" and cpu_mode_of(english_reranker.scorer.backend) is None


@pytest.mark.parametrize(("query", "relevant", "trap"), KEYWORD_TRAPS)
def test_bfloat16_keeps_the_top_1(english_reduced: Reranker, query: str, relevant: str, trap: str) -> None:
    assert english_reduced.rerank(query, [trap, relevant]).results[0].index == 1


def test_bfloat16_ranks_like_float32_on_judged_data(
    english_reduced: Reranker, english_reranker: Reranker, shared_data: Path
) -> None:
    pairs = judged_pairs(shared_data / "en_beir_dbpedia_subset", queries=8, docs=25)
    fast = english_reduced.compute_score(pairs)
    exact = english_reranker.compute_score(pairs)
    assert spearmanr(fast, exact).statistic >= 0.99
    assert max(abs(a - b) for a, b in zip(fast, exact, strict=True)) < 0.5  # logits, not noise
