"""Reference implementations the parity tests compare against, written without crossrank's engine."""

from __future__ import annotations

from pathlib import Path

from crossrank.config import BatchingOptions
from crossrank.engine.planner import PASS_COST_TOKENS


def flag_inputs(hf, query: str, document: str, max_length: int) -> tuple[list[int], list[int]]:  # type: ignore[no-untyped-def]
    """FlagEmbedding's documented algorithm: query alone cut to 3/4 max_length, then only the document is cut.

    FlagEmbedding 1.4.2 does not import under transformers 5, so its `prepare_for_model(q, d,
    truncation='only_second')` step is re-done with each model family's documented pair template.
    """
    q = hf(query, add_special_tokens=False, truncation=True, max_length=max_length * 3 // 4)["input_ids"]
    d = hf(document, add_special_tokens=False)["input_ids"]
    cls, sep = hf.cls_token_id, hf.sep_token_id
    if hf.__class__.__name__.startswith("XLMRoberta"):
        kept = d[: max_length - len(q) - 4]
        ids = [cls, *q, sep, sep, *kept, sep]
        return ids, [0] * len(ids)
    kept = d[: max_length - len(q) - 3]
    return [cls, *q, sep, *kept, sep], [0] * (len(q) + 2) + [1] * (len(kept) + 1)


def flag_scores(model_dir: Path, pairs: list[tuple[str, str]], max_length: int) -> list[float]:
    """Raw fp32 logits, one pair at a time (no padding), as FlagReranker.compute_score computes them."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    hf = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32).eval()
    scores = []
    with torch.inference_mode():
        for query, document in pairs:
            ids, types = flag_inputs(hf, query, document, max_length)
            inputs = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}
            if "token_type_ids" in hf.model_input_names:
                inputs["token_type_ids"] = torch.tensor([types])
            scores.append(float(model(**inputs).logits[0, 0]))
    return scores


def st_scores(model_dir: Path, pairs: list[tuple[str, str]], max_length: int) -> list[float]:
    """sentence-transformers CrossEncoder.predict raw logits (Identity activation), fp32 on CPU."""
    import torch
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(model_dir), max_length=max_length, device="cpu")
    return [float(x) for x in model.predict(pairs, activation_fn=torch.nn.Identity(), batch_size=8)]


def policies_agree(hf, query: str, document: str, max_length: int) -> bool:  # type: ignore[no-untyped-def]
    """True when `longest_first` (sentence-transformers) and FlagEmbedding's cut give the same pair."""
    q = len(hf(query, add_special_tokens=False)["input_ids"])
    d = len(hf(document, add_special_tokens=False)["input_ids"])
    room = max_length - hf.num_special_tokens_to_add(pair=True)
    return q + d <= room or (q <= max_length * 3 // 4 and room - q >= q)


def plain_plan(lengths: list[int], options: BatchingOptions) -> list[list[int]]:
    """crossrank's batch plan by the plain dynamic programme, a Python loop over every start (ties to the latest).

    What engine/planner.py computed before it was vectorised: its plans must stay these, and
    benchmarks/planner.py times the two side by side.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    sizes = [lengths[i] for i in order]
    cost = [0] * (len(sizes) + 1)
    cut = [0] * (len(sizes) + 1)
    for end in range(1, len(sizes) + 1):
        cost[end] = -1
        for start in range(end - 1, max(end - options.max_batch_size, 0) - 1, -1):
            padded = (end - start) * sizes[start]
            if end - start > 1 and padded > options.max_batch_tokens:
                break
            total = cost[start] + max(padded, options.min_pass_tokens) + PASS_COST_TOKENS
            if cost[end] < 0 or total < cost[end]:
                cost[end], cut[end] = total, start
    batches = []
    end = len(sizes)
    while end > 0:
        batches.append(order[cut[end] : end])
        end = cut[end]
    return batches[::-1]
