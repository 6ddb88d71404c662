"""bge-reranker-v2-gemma scored as FlagEmbedding 1.4.2's ``FlagLLMReranker`` does, transcribed (the fast reference
for tests/families/test_parity_gemma.py; the slow test there runs FlagEmbedding itself, reference_flag_peer.py).

From ``FlagEmbedding/abc/inference/AbsReranker.py`` (``get_detailed_inputs``: "A: " before the query, "B: " before
the passage) and ``FlagEmbedding/inference/reranker/decoder_only/base.py`` (``compute_score_single_gpu``: the
tokenisation and caps, ``prepare_for_model_compat(..., truncation="only_second")`` with transformers 4.x's rule,
the sep and prompt after the pair, ``Collater``'s padding to a multiple of 8, ``last_logit_pool``, the "Yes"
logit). Left out, as they change no score: the length sort and batch-size probe (padding only) and the dataloader
path (off by default).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

DEFAULT_PROMPT = (
    "Given a query A and a passage B, determine whether the passage contains an answer to the query by "
    "providing a prediction of either 'Yes' or 'No'."
)


@dataclass(frozen=True)
class FlagScores:
    """FlagEmbedding's raw scores (the "Yes" logit) and each pair's unpadded ids."""

    scores: list[float]
    input_ids: list[list[int]]


def _only_second(first: list[int], second: list[int], max_length: int) -> list[int]:
    """transformers 4.x ``prepare_for_model`` with ``truncation="only_second"`` and no special tokens (FlagEmbedding's
    ``prepare_for_model_compat`` does the same by hand on 5.x): nothing is cut when ``second`` is too short."""
    overflow = len(first) + len(second) - max_length
    if 0 < overflow < len(second):
        second = second[:-overflow]
    return first + second


def flag_llm_scores(
    model_dir: Path,
    pairs: Sequence[tuple[str, str]],
    *,
    prompt: str | None = None,
    max_length: int = 512,
    query_max_length: int | None = None,
) -> FlagScores:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    yes_loc = tokenizer("Yes", add_special_tokens=False)["input_ids"][0]
    if query_max_length is None:
        query_max_length = max_length * 3 // 4
    if prompt is None:
        prompt = DEFAULT_PROMPT
    prompt_inputs = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    sep_inputs = tokenizer("\n", add_special_tokens=False)["input_ids"]
    encode_max_length = max_length + len(sep_inputs) + len(prompt_inputs)
    bos = tokenizer.bos_token_id
    with_bos = bos is not None and bos != tokenizer.pad_token_id

    items = []
    for query, passage in pairs:
        query_ids = tokenizer(f"A: {query}", add_special_tokens=False, max_length=query_max_length, truncation=True)[
            "input_ids"
        ]
        passage_ids = tokenizer(f"B: {passage}", add_special_tokens=False, max_length=max_length, truncation=True)[
            "input_ids"
        ]
        first = [bos, *query_ids] if with_bos else query_ids
        ids = _only_second(first, sep_inputs + passage_ids, encode_max_length) + sep_inputs + prompt_inputs
        items.append({"input_ids": ids, "attention_mask": [1] * len(ids)})
    batch = tokenizer.pad(items, padding=True, pad_to_multiple_of=8, return_tensors="pt")

    with torch.no_grad():
        logits = model(**batch, output_hidden_states=True).logits
    mask = batch["attention_mask"]
    if mask[:, -1].sum() == mask.shape[0]:  # last_logit_pool: left padding (or none) ends every row at -1
        last = logits[:, -1, :]
    else:
        lengths = mask.sum(dim=1) - 1
        last = torch.stack([logits[i, lengths[i], :] for i in range(logits.shape[0])])
    return FlagScores(scores=last[:, yes_loc].float().tolist(), input_ids=[item["input_ids"] for item in items])
