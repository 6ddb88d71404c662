"""Qwen3-Reranker: crossrank's scores equal the model card's code and sentence-transformers' CrossEncoder.

A tiny random Qwen3ForCausalLM with the real Qwen3 tokenizer (tests/families/tiny_models.py), float32 on CPU.
Slow: the real tokenizer (151669 tokens) and its embedding take a few seconds to load per reranker.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from parity import INSTRUCTION, PAIRS, prompt_ids, rerank_pairs
from reference_qwen3 import model_card_scores
from tiny_models import build_qwen3_reranker

from crossrank import Reranker

pytestmark = [
    pytest.mark.slow,
    # The model card's own call (tokenizer.pad with max_length and padding=True) draws this from transformers.
    pytest.mark.filterwarnings("ignore:`max_length` is ignored when `padding`=`True`:UserWarning"),
]

# Long enough for the short pairs, short enough that the long document is cut (upstream cuts the end of its
# "<Instruct> <Query> <Document>" text, crossrank the end of the document alone: the same tokens here).
MAX_LENGTH = 160


@pytest.fixture(scope="module")
def qwen3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_qwen3_reranker(tmp_path_factory.mktemp("qwen3") / "Qwen3-Reranker-tiny")


@pytest.fixture(scope="module")
def reranker(qwen3_dir: Path) -> Reranker:
    reranker = Reranker(str(qwen3_dir), device="cpu", dtype="float32")
    assert reranker.family.name == "qwen3-reranker"
    return reranker


@pytest.mark.parametrize("instruction", [None, INSTRUCTION], ids=["default-instruction", "custom-instruction"])
def test_matches_the_model_card(qwen3_dir: Path, reranker: Reranker, instruction: str | None) -> None:
    card = model_card_scores(qwen3_dir, PAIRS, instruction, max_length=MAX_LENGTH)
    assert len(card.input_ids[-1]) == MAX_LENGTH  # the long document was cut
    ours = rerank_pairs(reranker, PAIRS, instruction=instruction, max_length=MAX_LENGTH)

    for (query, document), ids in zip(PAIRS, card.input_ids, strict=True):
        assert prompt_ids(reranker, query, document, instruction=instruction, max_length=MAX_LENGTH) == ids
    assert [r.relevance_score for r in ours] == pytest.approx(card.scores, abs=1e-4)
    assert [r.score for r in ours] == pytest.approx(card.logits, abs=1e-4)
    # The pairs score apart (a prompt bug that made every score alike would not pass unseen).
    assert max(card.logits) - min(card.logits) > 0.1


@pytest.mark.parametrize("instruction", [None, INSTRUCTION], ids=["default-instruction", "custom-instruction"])
def test_matches_sentence_transformers(qwen3_dir: Path, reranker: Reranker, instruction: str | None) -> None:
    import torch
    from sentence_transformers import CrossEncoder

    # How CrossEncoder("Qwen/Qwen3-Reranker-0.6B") loads the hub repo: a causal LM and a yes/no logit module, the
    # prompt rendered by the folder's chat template (ST's `prompt` becomes its system message: the instruction).
    # Its max_length cuts the whole prompt and then writes the template's end back, as the card's code does.
    model = CrossEncoder(str(qwen3_dir), device="cpu", local_files_only=True, max_length=MAX_LENGTH)
    kwargs = {} if instruction is None else {"prompt": instruction}
    margins = model.predict(PAIRS, activation_fn=torch.nn.Identity(), show_progress_bar=False, **kwargs)
    probabilities = model.predict(PAIRS, show_progress_bar=False, **kwargs)

    ours = rerank_pairs(reranker, PAIRS, instruction=instruction, max_length=MAX_LENGTH)
    assert [r.score for r in ours] == pytest.approx([float(m) for m in margins], abs=1e-4)
    assert [r.relevance_score for r in ours] == pytest.approx([float(p) for p in probabilities], abs=1e-4)
