"""OpenVINO (static int8 by NNCF, or float32) against ONNX Runtime on crossrank's own batches: same model, inputs.

    M=~/.cache/crossrank/m3-shape   # crossrank bench -m m3-shape --tokenizer ... builds it
    python benchmarks/openvino_int8.py --model $M --mode onnx-int8
    python benchmarks/openvino_int8.py --model $M --mode openvino-int8 \
        --openvino-xml $M/openvino/openvino_model_qint8_quantized.xml
    python benchmarks/openvino_int8.py --model $M --mode openvino-fp32

Every mode scores the same generated `rag` workload through crossrank's tokenizer and batch planner, so only
the engine differs: in the OpenVINO modes each planned batch goes to an OpenVINO compiled model instead of the
ONNX Runtime session (`torch-fp32` is crossrank's default backend as it is). Run the ONNX and torch modes from
crossrank's environment and the OpenVINO ones from one with `pip install "optimum-intel[openvino]"` (same
crossrank). The int8 OpenVINO model is the one sentence-transformers' `export_static_quantized_openvino_model`
writes (`crossrank bench --compare sentence-transformers-openvino-int8` makes it); the float32 one is exported
here by optimum-intel. One mode per process; prints pairs/s.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from crossrank import Reranker
from crossrank.backends.base import EncodedBatch
from crossrank.engine.tokenizer import PairTokenizer
from crossrank.tools.bench import make_workload


def _openvino_forward(xml: Path, precision: str | None) -> Any:
    import openvino

    # OpenVINO's own default (what sentence-transformers' users get) runs non-int8 operations in bfloat16 on CPUs
    # with AVX-512-BF16 or AMX; --inference-precision f32 keeps them in float32.
    config = {} if precision is None else {"INFERENCE_PRECISION_HINT": precision}
    compiled = openvino.Core().compile_model(str(xml), "CPU", config)
    names = {port.get_any_name() for port in compiled.inputs}

    def forward(batch: EncodedBatch) -> np.ndarray:
        feeds = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        if "token_type_ids" in names:
            feeds["token_type_ids"] = np.zeros_like(batch.input_ids)
        logits = compiled(feeds)[compiled.outputs[0]]
        return np.ascontiguousarray(logits[:, 0], dtype=np.float32)

    return forward


def _openvino_fp32(model: Path) -> Path:
    """optimum-intel's float32 export of the model (what sentence-transformers' backend="openvino" runs)."""
    folder = model / "openvino-fp32"
    if not (folder / "openvino_model.xml").is_file():
        from optimum.intel import OVModelForSequenceClassification

        OVModelForSequenceClassification.from_pretrained(model, export=True, compile=False).save_pretrained(folder)
    return folder / "openvino_model.xml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument(
        "--mode", choices=["onnx-int8", "onnx-fp32", "openvino-int8", "openvino-fp32", "torch-fp32"], required=True
    )
    parser.add_argument("--openvino-xml", type=Path, help="the int8 OpenVINO model (mode openvino-int8)")
    parser.add_argument("--inference-precision", choices=["f32", "bf16"], help="OpenVINO modes; default: OpenVINO's")
    parser.add_argument("--queries", type=int, default=2)
    parser.add_argument("--docs", type=int, default=24)
    args = parser.parse_args()
    workload = make_workload("rag", PairTokenizer.from_pretrained(args.model), queries=args.queries, docs=args.docs)
    # The OpenVINO modes borrow the torch backend's loading only (its forward is replaced), so they need no ONNX
    # export of this environment's torch and transformers.
    backend_options = (
        {"backend": "onnx", "quantize": "int8" if args.mode == "onnx-int8" else "none"}
        if args.mode.startswith("onnx")
        else {"backend": "torch", "dtype": "float32"}
    )
    with Reranker(str(args.model), device="cpu", **backend_options) as reranker:  # type: ignore[arg-type]
        backend = reranker.scorer.backend
        if args.mode == "openvino-int8":
            backend.forward = _openvino_forward(args.openvino_xml, args.inference_precision)  # type: ignore[method-assign]
        elif args.mode == "openvino-fp32":
            backend.forward = _openvino_forward(_openvino_fp32(args.model), args.inference_precision)  # type: ignore[method-assign]
        first = workload["queries"][0]
        reranker.rerank(first["query"], first["documents"])  # warm-up (OpenVINO compiles kernels per shape)
        started = time.perf_counter()
        for item in workload["queries"]:
            reranker.rerank(item["query"], item["documents"])
        seconds = time.perf_counter() - started
    pairs = sum(len(item["documents"]) for item in workload["queries"])
    result = {"mode": args.mode, "pairs_per_second": round(pairs / seconds, 3)}
    if args.mode.startswith("openvino"):
        result["inference_precision"] = args.inference_precision or "openvino's default"
    print(json.dumps(result))


if __name__ == "__main__":
    main()
