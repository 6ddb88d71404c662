"""bge-reranker-v2-gemma: crossrank's scores equal FlagEmbedding 1.4.2's ``FlagLLMReranker`` (the "Yes" logit).

A tiny random GemmaForCausalLM with a Gemma-style tokenizer built here (tests/families/tiny_models.py: no Gemma
tokenizer is on the registries), float32 on CPU. The fast tests compare with FlagEmbedding's code transcribed
(reference_flag.py); the slow ones with FlagEmbedding itself in its own environment (flag_peer.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from flag_peer import flag_peer_scores
from parity import INSTRUCTION, LONG_DOCUMENT, PAIRS, prompt_ids, rerank_pairs
from reference_flag import flag_llm_scores
from tiny_models import build_bge_gemma

from crossrank import Reranker

# FlagEmbedding's max_length caps the passage (its prompt comes on top, counted twice in its budget); crossrank's
# counts every token: the test gives crossrank the length FlagEmbedding's long pair came out at.
FLAG_MAX_LENGTH = 64
PROMPTS = [None, INSTRUCTION]
PROMPT_IDS = ["default-prompt", "custom-prompt"]


@pytest.fixture(scope="module")
def gemma_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bge_gemma(tmp_path_factory.mktemp("gemma") / "bge-reranker-v2-gemma-tiny")


@pytest.fixture(scope="module")
def reranker(gemma_dir: Path) -> Reranker:
    reranker = Reranker(str(gemma_dir), device="cpu", dtype="float32")
    assert reranker.family.name == "bge-reranker-gemma"
    return reranker


@pytest.mark.parametrize("prompt", PROMPTS, ids=PROMPT_IDS)
def test_matches_flagembeddings_code(gemma_dir: Path, reranker: Reranker, prompt: str | None) -> None:
    reference = flag_llm_scores(gemma_dir, PAIRS, prompt=prompt, max_length=FLAG_MAX_LENGTH)
    max_length = len(reference.input_ids[-1])
    assert max_length < len(LONG_DOCUMENT.split())  # the long document was cut

    for (query, document), ids in zip(PAIRS, reference.input_ids, strict=True):
        assert prompt_ids(reranker, query, document, instruction=prompt, max_length=max_length) == ids
    ours = rerank_pairs(reranker, PAIRS, instruction=prompt, max_length=max_length)
    assert [r.score for r in ours] == pytest.approx(reference.scores, abs=1e-4)
    assert max(reference.scores) - min(reference.scores) > 0.1


@pytest.mark.slow
@pytest.mark.parametrize("prompt", PROMPTS, ids=PROMPT_IDS)
def test_matches_flagembedding_itself(gemma_dir: Path, reranker: Reranker, prompt: str | None) -> None:
    upstream = flag_peer_scores("gemma", gemma_dir, PAIRS, prompt=prompt, max_length=FLAG_MAX_LENGTH)
    max_length = len(flag_llm_scores(gemma_dir, PAIRS[-1:], prompt=prompt, max_length=FLAG_MAX_LENGTH).input_ids[0])
    ours = rerank_pairs(reranker, PAIRS, instruction=prompt, max_length=max_length)
    assert [r.score for r in ours] == pytest.approx(upstream, abs=1e-4)
