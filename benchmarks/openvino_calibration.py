"""OpenVINO static int8 (NNCF) made without data from the hub: how its accuracy depends on the calibration texts.

    python -m venv --system-site-packages ~/envs/ovdirect && ~/envs/ovdirect/bin/pip install openvino nncf
    ~/envs/ovdirect/bin/python benchmarks/openvino_calibration.py \
        --model ../shared/models/minilm-l6-distilled-reranker-en --data ../shared/data/en_beir_dbpedia_subset

Static int8 fixes every activation's scale from calibration samples, so an OpenVINO int8 backend in crossrank
would need texts to calibrate on, offline, and must not take them from the inputs it is judged on. This
converts the model from PyTorch with OpenVINO itself (no optimum-intel, whose huggingface_hub pin crossrank's
environment cannot meet) and quantizes it with NNCF's transformer recipe, calibrated on (pairs each alone, no
padding, as crossrank tokenises them):

- ``generated``: `crossrank bench`'s generated `rag` texts (random common English words; no data at all);
- ``held-out``: the judged set's own pairs of its first half of queries.

Both are judged on the pairs of the other half of the queries, against float32 torch, beside crossrank's ONNX
Runtime dynamic int8 and the converted model before quantization (which must match float32): Spearman rho of the
scores, top-1 kept, NDCG@10.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch  # noqa: TID251  # converts the torch model; a benchmark, not package code
from agreement import agreement, ndcg_at_10

from crossrank import Reranker
from crossrank.backends.base import EncodedBatch
from crossrank.backends.onnx import _unpadded_row
from crossrank.engine.tokenizer import PairTokenizer
from crossrank.evaluate.data import load_beir
from crossrank.tools.bench import make_workload

Pairs = list[tuple[str, str]]


class _Logits(torch.nn.Module):
    """The classifier's first logit, a plain tensor for OpenVINO's converter."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits[:, 0]


def _feeds(batch: EncodedBatch) -> Iterator[dict[str, np.ndarray]]:
    """Each pair of a planned batch alone, without its padding, as crossrank's int8 backend runs pairs."""
    feeds = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
    if batch.token_type_ids is not None:
        feeds["token_type_ids"] = batch.token_type_ids
    return (_unpadded_row(feeds, row) for row in range(batch.size))


def _recorded_feeds(reranker: Reranker, pairs: Pairs) -> list[dict[str, np.ndarray]]:
    """The model inputs crossrank builds for ``pairs`` (scored once with the torch backend to record them)."""
    backend = reranker.scorer.backend
    forward = backend.forward
    seen: list[dict[str, np.ndarray]] = []

    def recording(batch: EncodedBatch) -> Any:
        seen.extend(_feeds(batch))
        return forward(batch)

    backend.forward = recording  # type: ignore[method-assign]
    try:
        reranker.score(pairs)
    finally:
        backend.forward = forward  # type: ignore[method-assign]
    return seen


def _converted(reranker: Reranker, example: dict[str, np.ndarray]) -> Any:
    import openvino

    inputs = {k: torch.from_numpy(v) for k, v in example.items()}
    return openvino.convert_model(_Logits(reranker.scorer.backend._model), example_input=inputs)  # type: ignore[attr-defined]


def _quantized(reranker: Reranker, calibration: list[dict[str, np.ndarray]], smooth_quant: float | None) -> Any:
    import nncf

    model = _converted(reranker, calibration[0])
    dataset = nncf.Dataset(calibration)
    # NNCF's recipe for transformers: asymmetric activations (MIXED) and its transformer-specific ignored ops.
    return nncf.quantize(
        model,
        dataset,
        preset=nncf.QuantizationPreset.MIXED,
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(calibration),
        advanced_parameters=None
        if smooth_quant is None
        else nncf.AdvancedQuantizationParameters(
            smooth_quant_alphas=nncf.AdvancedSmoothQuantParameters(matmul=smooth_quant)
        ),
    )


def _openvino_forward(model: Any) -> Callable[[EncodedBatch], np.ndarray]:
    import openvino

    # OpenVINO runs what is not int8 in bfloat16 by default on CPUs with AVX-512-BF16 or AMX; float32 here, so
    # the scores differ from float32 by the quantization alone.
    compiled = openvino.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    names = {port.get_any_name() for port in compiled.inputs}

    def forward(batch: EncodedBatch) -> np.ndarray:
        rows = [compiled({k: v for k, v in feed.items() if k in names})[0] for feed in _feeds(batch)]
        return np.concatenate([np.asarray(r, dtype=np.float32).reshape(-1) for r in rows])

    return forward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--samples", type=int, default=300, help="calibration pairs")
    parser.add_argument("--smooth-quant", type=float, help="SmoothQuant alpha of the MatMuls (-1: off; default NNCF's)")
    args = parser.parse_args()
    dataset = load_beir(args.data)
    assert dataset.candidates is not None, f"{args.data} has no candidates.jsonl"
    queries = list(dataset.candidates)
    calibrate_on, judge_on = queries[: len(queries) // 2], queries[len(queries) // 2 :]

    # Candidates missing from the corpus cannot be scored (crossrank eval leaves them out too).
    candidates = {q: [d for d in ids if d in dataset.documents] for q, ids in dataset.candidates.items()}

    def pairs_of(ids: list[str]) -> Pairs:
        return [(dataset.queries[q], dataset.documents[d]) for q in ids for d in candidates[q]]

    tokenizer = PairTokenizer.from_pretrained(args.model)
    rng = np.random.default_rng(0)
    work = make_workload("rag", tokenizer, queries=12, docs=args.samples // 12 + 1, seed=1)
    generated = [(item["query"], d) for item in work["queries"] for d in item["documents"]][: args.samples]
    first_half = pairs_of(calibrate_on)
    held_out = [first_half[i] for i in rng.permutation(len(first_half))[: args.samples]]
    judged = pairs_of(judge_on)
    copy = Path(tempfile.mkdtemp(prefix="ov-calibration-")) / "model"  # the ONNX export is written beside it
    shutil.copytree(args.model, copy)
    try:
        with (
            Reranker(str(copy), device="cpu", dtype="float32") as fp32,
            Reranker(str(copy), backend="onnx", quantize="int8") as onnx_int8,
        ):
            scores = {"float32": fp32.score(judged), "onnx int8 (dynamic)": onnx_int8.score(judged)}
            original = fp32.scorer.backend.forward
            calibrations = {
                name: _recorded_feeds(fp32, texts) for name, texts in (("generated", generated), ("held-out", held_out))
            }
            models = {"openvino float32 (converted)": _converted(fp32, calibrations["generated"][0])}
            for name, feeds in calibrations.items():
                models[f"openvino int8 (static, {name})"] = _quantized(fp32, feeds, args.smooth_quant)
            for name, model in models.items():
                fp32.scorer.backend.forward = _openvino_forward(model)  # type: ignore[method-assign]
                scores[name] = fp32.score(judged)
                fp32.scorer.backend.forward = original  # type: ignore[method-assign]
    finally:
        shutil.rmtree(copy.parent, ignore_errors=True)
    _report(dataset.qrels, {q: candidates[q] for q in judge_on}, scores)


def _report(qrels: dict[str, dict[str, int]], candidates: dict[str, list[str]], scores: dict[str, list[float]]) -> None:
    """One JSON line per system: agreement with float32 and NDCG@10 on the judged queries' candidates."""
    rows = {name: _per_query(values, candidates) for name, values in scores.items()}
    reference = rows["float32"]
    ndcg_fp32 = ndcg_at_10(qrels, candidates, reference)
    for name, values in rows.items():
        a, ndcg = agreement(reference, values), ndcg_at_10(qrels, candidates, values)
        summary = {"system": name, "pairs": a.pairs, "queries": a.queries}
        summary |= {"spearman": round(a.spearman, 4), "top1_kept": a.top1_kept}
        summary |= {"ndcg@10": round(ndcg, 4), "ndcg_points_vs_fp32": round(100 * (ndcg - ndcg_fp32), 2)}
        print(json.dumps(summary))


def _per_query(values: list[float], candidates: dict[str, list[str]]) -> list[list[float]]:
    """Flat scores, query after query, cut into one row per query."""
    ends = np.cumsum([len(docs) for docs in candidates.values()])
    return [part.tolist() for part in np.split(np.asarray(values), ends[:-1])]


if __name__ == "__main__":
    main()
