"""mxbai-rerank-v2 scored as mixedbread-ai's ``mxbai-rerank`` 0.1.6 package does (Apache-2.0; the reference for
tests/families/test_parity_mxbai.py).

Transcribed from ``mxbai_rerank/mxbai_rerank_v2.py`` (class ``MxbaiRerankV2``: ``prepare_predefined_inputs``,
``prepare_inputs``, ``forward``, ``predict(normalize=False)``). The package cannot run here: it calls the tokenizer's
``prepare_for_model``, which transformers 5 removed, so that one call is written out with transformers 4.x's
semantics for ``truncation="only_second"`` (the research for this issue checked the transcription against the
package itself under transformers 4.57: identical ids and scores).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

SEP = "\n"
INSTRUCTION_PROMPT = "instruction: {instruction}"
QUERY_PROMPT = "query: {query}"
DOC_PROMPT = "document: {document}"
TASK_PROMPT = (
    "You are a search relevance expert who evaluates how well documents match search queries. For each "
    "query-document pair, carefully analyze the semantic relationship between them, then provide your binary "
    "relevance judgment (0 for not relevant, 1 for relevant).\nRelevance:"
)
CHAT_PREFIX = (
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\n"
)
CHAT_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n"


@dataclass(frozen=True)
class MxbaiScores:
    """The package's raw scores (logit("1") - logit("0")), each pair's unpadded ids, and its fixed token count."""

    scores: list[float]
    input_ids: list[list[int]]
    predefined_length: int


def _prepare_for_model_only_second(first: list[int], second: list[int], max_length: int) -> list[int]:
    """transformers 4.x ``prepare_for_model(first, second, truncation="only_second", max_length=...)`` without special
    tokens: the end of ``second`` is dropped to fit; if it is too short to absorb the excess, nothing is cut."""
    overflow = len(first) + len(second) - max_length
    if 0 < overflow < len(second):
        second = second[:-overflow]
    return first + second


def package_scores(
    model_dir: Path, pairs: Sequence[tuple[str, str]], instruction: str | None = None, max_length: int = 8192
) -> MxbaiScores:
    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    model_max_length = AutoConfig.from_pretrained(model_dir).max_position_embeddings

    def get_input_ids(x: str) -> list[int]:
        ids: list[int] = tokenizer(x, return_tensors=None, add_special_tokens=False)["input_ids"]
        return ids

    yes_loc = get_input_ids("1")[0]
    no_loc = get_input_ids("0")[0]
    task_prompt_inputs = get_input_ids(TASK_PROMPT)
    sep_inputs = get_input_ids(SEP)
    prefix_inputs = get_input_ids(CHAT_PREFIX)
    suffix_inputs = get_input_ids(CHAT_SUFFIX)
    predefined_length = len(prefix_inputs) + len(task_prompt_inputs) + len(suffix_inputs) + len(sep_inputs)
    if max_length + predefined_length > model_max_length:
        max_length = model_max_length - predefined_length

    items = []
    instruction_prompt = INSTRUCTION_PROMPT.format(instruction=instruction) if instruction else None
    for query, document in pairs:
        query_prompt = QUERY_PROMPT.format(query=query)
        if instruction_prompt:
            query_prompt = "".join([instruction_prompt, SEP, query_prompt])
        query_inputs = tokenizer(
            query_prompt, return_tensors=None, add_special_tokens=False, max_length=max_length * 3 // 4, truncation=True
        )
        available_tokens = model_max_length - len(query_inputs["input_ids"]) - predefined_length
        doc_maxlen = min(available_tokens, max_length)
        document_inputs = tokenizer(
            DOC_PROMPT.format(document=document),
            return_tensors=None,
            add_special_tokens=False,
            max_length=doc_maxlen,
            truncation=True,
        )
        ids = _prepare_for_model_only_second(
            query_inputs["input_ids"], sep_inputs + document_inputs["input_ids"], max_length
        )
        ids = prefix_inputs + ids + sep_inputs + task_prompt_inputs + suffix_inputs
        items.append({"input_ids": ids, "attention_mask": [1] * len(ids)})
    inputs = tokenizer.pad(items, padding="longest", pad_to_multiple_of=8, return_tensors="pt")

    with torch.inference_mode():
        logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    scores = (logits[:, -1, yes_loc] - logits[:, -1, no_loc]).float().tolist()
    unpadded = [item["input_ids"] for item in items]
    return MxbaiScores(scores=scores, input_ids=unpadded, predefined_length=predefined_length)
