"""Qwen3-Reranker scored as its model card does (the reference for tests/families/test_parity_qwen3.py).

Transcribed from the transformers snippet of the Qwen/Qwen3-Reranker-0.6B model card (the same text appears word
for word in its public copies, e.g. openvino.genai's and xinference's tests), with the model folder, the
instruction and ``max_length`` as parameters and the raw logit returned beside the probability. Only the names
of the module-level globals changed; the tokenisation, truncation, padding and score are the card's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"


@dataclass(frozen=True)
class CardScores:
    """The card's p(yes) per pair, the logit log(p(yes) / p(no)), and each pair's unpadded input ids."""

    scores: list[float]
    logits: list[float]
    input_ids: list[list[int]]


def format_instruction(instruction: str | None, query: str, doc: str) -> str:
    if instruction is None:
        instruction = "Given a web search query, retrieve relevant passages that answer the query"
    return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}"


def model_card_scores(
    model_dir: Path, pairs: Sequence[tuple[str, str]], instruction: str | None = None, max_length: int = 8192
) -> CardScores:
    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    token_false_id = tokenizer.convert_tokens_to_ids("no")
    token_true_id = tokenizer.convert_tokens_to_ids("yes")
    prefix_tokens = tokenizer.encode(PREFIX, add_special_tokens=False)
    suffix_tokens = tokenizer.encode(SUFFIX, add_special_tokens=False)

    texts = [format_instruction(instruction, query, doc) for query, doc in pairs]
    inputs = tokenizer(
        texts,
        padding=False,
        truncation="longest_first",
        return_attention_mask=False,
        max_length=max_length - len(prefix_tokens) - len(suffix_tokens),
    )
    for i, ele in enumerate(inputs["input_ids"]):
        inputs["input_ids"][i] = prefix_tokens + ele + suffix_tokens
    unpadded = [list(ids) for ids in inputs["input_ids"]]
    inputs = tokenizer.pad(inputs, padding=True, return_tensors="pt", max_length=max_length)

    with torch.no_grad():
        batch_scores = model(**inputs).logits[:, -1, :]
    true_vector = batch_scores[:, token_true_id]
    false_vector = batch_scores[:, token_false_id]
    batch_scores = torch.stack([false_vector, true_vector], dim=1)
    batch_scores = torch.nn.functional.log_softmax(batch_scores, dim=1)
    scores = batch_scores[:, 1].exp().tolist()
    logits = (batch_scores[:, 1] - batch_scores[:, 0]).tolist()
    return CardScores(scores=scores, logits=logits, input_ids=unpadded)
