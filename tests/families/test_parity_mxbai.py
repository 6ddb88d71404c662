"""mxbai-rerank-v2: crossrank's scores equal the mxbai-rerank package's (raw logit("1") - logit("0")).

A tiny random Qwen2ForCausalLM with the real Qwen tokenizer (tests/families/tiny_models.py), float32 on CPU; the
reference is the package's code transcribed (tests/families/reference_mxbai.py says why it cannot run itself).
Slow: the real tokenizer (151669 tokens) takes a few seconds to load per reranker.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from parity import INSTRUCTION, PAIRS, prompt_ids, rerank_pairs
from reference_mxbai import package_scores
from tiny_models import build_mxbai_rerank_v2

from crossrank import Reranker

pytestmark = pytest.mark.slow

# The package's max_length counts the query and document only (its fixed prompt comes on top); crossrank's counts
# every token. 100 cuts the long document and no other.
PACKAGE_MAX_LENGTH = 100


@pytest.fixture(scope="module")
def mxbai_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_mxbai_rerank_v2(tmp_path_factory.mktemp("mxbai") / "mxbai-rerank-v2-tiny")


@pytest.mark.parametrize("instruction", [None, INSTRUCTION], ids=["no-instruction", "instruction"])
def test_matches_the_mxbai_rerank_package(mxbai_dir: Path, instruction: str | None) -> None:
    reference = package_scores(mxbai_dir, PAIRS, instruction, max_length=PACKAGE_MAX_LENGTH)
    max_length = PACKAGE_MAX_LENGTH + reference.predefined_length
    assert len(reference.input_ids[-1]) == max_length  # the long document was cut
    reranker = Reranker(str(mxbai_dir), device="cpu", dtype="float32")
    assert reranker.family.name == "mxbai-rerank-v2"

    for (query, document), ids in zip(PAIRS, reference.input_ids, strict=True):
        assert prompt_ids(reranker, query, document, instruction=instruction, max_length=max_length) == ids
    ours = rerank_pairs(reranker, PAIRS, instruction=instruction, max_length=max_length)
    assert [r.score for r in ours] == pytest.approx(reference.scores, abs=1e-4)
    assert max(reference.scores) - min(reference.scores) > 0.1
