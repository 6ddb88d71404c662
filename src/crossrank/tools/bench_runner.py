"""One system of a `crossrank bench` run, in a process of its own: ``python bench_runner.py SPEC.json``.

It also runs from another Python environment (``--peer-python``, e.g. one with FlagEmbedding and
transformers < 5), so it needs only the standard library and the system it measures: crossrank is
imported only to measure crossrank. It prints JSON lines: ``progress`` events, then one ``result``.

Every system gets the same queries, in the same order, one call per query with all its
documents; the first call also warms up (it counts towards time to first score, not latency).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Over all forward passes: [real tokens, computed tokens, sum of each sequence's real length squared (attention
# FLOPs grow with it)], counted by a hook each system's model calls.
_Counter = list[int]


def _emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def _count_hf(model: Any, counter: _Counter, pad: int | None = None) -> None:
    """Count real and padded tokens of every forward pass of a Hugging Face model.

    The hook sits on the token embedding, which every forward pass calls, however the system
    calls the model; a real token is one that is not padding (``pad``, else the model config's pad id:
    decoders often name none there, their tokenizer does).
    """
    pad = model.config.pad_token_id if pad is None else pad

    def hook(_module: Any, args: tuple[Any, ...]) -> None:
        ids = args[0]
        lengths = (ids != pad).sum(dim=-1)
        counter[0] += int(lengths.sum().item())
        counter[1] += int(ids.numel())
        counter[2] += int((lengths * lengths).sum().item())

    model.get_input_embeddings().register_forward_pre_hook(hook)


Score = Callable[[str, list[str]], object]


def _crossrank(spec: dict[str, Any], counter: _Counter, *, prefix_reuse: bool = True) -> tuple[Score, str]:
    """crossrank at its defaults; without ``prefix_reuse``, a decoder runs each pair's whole prompt (its batches
    lose ``shared_prefix``), which measures what the reuse gains."""
    from dataclasses import replace

    from crossrank import Reranker
    from crossrank.backends.cpu_mode import cpu_mode_of

    options = {k: spec[k] for k in ("device", "dtype", "backend", "quantize", "max_length") if spec.get(k) is not None}
    reranker = Reranker(spec["model"], **options)
    backend = reranker.scorer.backend
    forward = backend.forward

    def counted(batch: Any) -> Any:
        lengths = batch.attention_mask.sum(axis=1).astype("int64")
        counter[0] += int(lengths.sum())
        counter[1] += batch.computed_tokens(backend.runs_pairs_alone)
        counter[2] += int((lengths * lengths).sum())
        return forward(batch if prefix_reuse else replace(batch, shared_prefix=None))

    backend.forward = counted  # type: ignore[method-assign]  # measurement only, in this throwaway process
    spec["cpu_precision"] = cpu_mode_of(backend)  # dtype="auto" on CPU: what it measured and chose, for the result
    score: Score = lambda query, documents: reranker.rerank(query, documents, return_documents=False)  # noqa: E731
    return score, f"{backend.name} {backend.dtype}"


def _predict(encoder: Any) -> Score:
    """sentence-transformers' recommended call: ``CrossEncoder.predict`` on the pairs, default batch size."""
    return lambda query, documents: encoder.predict([(query, d) for d in documents], show_progress_bar=False)


def _sentence_transformers(spec: dict[str, Any], counter: _Counter) -> tuple[Score, str]:
    from sentence_transformers import CrossEncoder

    device = None if spec.get("device") in (None, "auto") else spec["device"]
    # Its default precision is the checkpoint's (bfloat16 for Qwen3-Reranker, on a CPU too): a dtype asked for is
    # passed on, and the precision reported is the one it loaded.
    asked = spec.get("dtype") in ("float32", "float16", "bfloat16")
    model_kwargs = {"dtype": spec["dtype"]} if asked else {}
    # A decoder reranker (Qwen3-Reranker) loads as a causal LM scored on its "yes"/"no" logits, each pair rendered
    # by the folder's chat template.
    encoder = CrossEncoder(spec["model"], max_length=spec["max_length"], device=device, model_kwargs=model_kwargs)
    _count_hf(encoder.model, counter, encoder.tokenizer.pad_token_id)
    return _predict(encoder), f"torch {str(next(encoder.model.parameters()).dtype).removeprefix('torch.')}"


def _sentence_transformers_onnx(spec: dict[str, Any], counter: _Counter, *, int8: bool) -> tuple[Score, str]:
    """sentence-transformers' own fastest CPU path: its ONNX backend, optionally its int8 helper."""
    from sentence_transformers import CrossEncoder, export_dynamic_quantized_onnx_model

    options = {"max_length": spec["max_length"], "device": "cpu", "backend": "onnx"}
    encoder = CrossEncoder(spec["model"], **options)
    if int8:
        flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
        # Its helper's presets: VNNI kernels where the CPU has them, else AVX2.
        config = "avx512_vnni" if "avx512_vnni" in flags else "avx2"
        export_dynamic_quantized_onnx_model(encoder, config, spec["model"])
        # Named after the preset's weight type: model_quint8_avx2.onnx, model_qint8_avx512_vnni.onnx.
        [written] = Path(spec["model"], "onnx").glob(f"model_q*int8_{config}.onnx")
        file_name = f"onnx/{written.name}"
        encoder = CrossEncoder(spec["model"], **options, model_kwargs={"file_name": file_name})
    return _predict(encoder), f"onnx {f'int8 ({config})' if int8 else 'float32'}"


def _sentence_transformers_openvino(spec: dict[str, Any], counter: _Counter, *, int8: bool) -> tuple[Score, str]:
    """sentence-transformers' OpenVINO backend, optionally with its static int8 helper (optimum-intel + NNCF).

    The helper calibrates on Hugging Face's GLUE SST-2 by default, out of reach offline; it calibrates here on
    the workload's own queries and documents (one text per sample, padded to 384 tokens, as the helper does),
    which can only flatter it.
    """
    from sentence_transformers import CrossEncoder

    options = {"max_length": spec["max_length"], "device": "cpu", "backend": "openvino"}
    encoder = CrossEncoder(spec["model"], **options)
    if not int8:
        return _predict(encoder), "openvino float32"
    from optimum.intel import OVQuantizationConfig
    from sentence_transformers import export_static_quantized_openvino_model

    workload = json.loads(Path(spec["workload"]).read_text())["queries"]
    texts = [text for item in workload for text in (item["query"], *item["documents"])]
    calibration = Path(spec["workload"]).parent / "calibration"
    calibration.mkdir(exist_ok=True)
    lines = (json.dumps({"sentence": text}) for text in texts)
    (calibration / "train.jsonl").write_text("\n".join(lines) + "\n")
    export_static_quantized_openvino_model(
        encoder,
        OVQuantizationConfig(num_samples=min(300, len(texts))),
        spec["model"],
        dataset_name=str(calibration),
        dataset_config_name="default",
        dataset_split="train",
        column_name="sentence",
    )
    file_name = "openvino/openvino_model_qint8_quantized.xml"
    encoder = CrossEncoder(spec["model"], **options, model_kwargs={"file_name": file_name})
    return _predict(encoder), "openvino int8 (static)"


def _flagembedding(spec: dict[str, Any], counter: _Counter) -> tuple[Score, str]:
    """FlagEmbedding's reranker class for the model: ``FlagReranker`` for a cross-encoder, ``FlagLLMReranker`` for a
    decoder (bge-reranker-v2-gemma), ``LayerWiseFlagLLMReranker`` for a layer-wise one, each at its defaults."""
    device = spec.get("device")
    devices = None if device in (None, "auto") else [device]
    config = json.loads((Path(spec["model"]) / "config.json").read_text())
    architecture = str((config.get("architectures") or [""])[0])
    if architecture.endswith("ForCausalLM"):
        from FlagEmbedding import FlagLLMReranker, LayerWiseFlagLLMReranker

        # Its half precision on a GPU is use_fp16 (or use_bf16); on a CPU it runs float32 whatever is asked.
        kind = LayerWiseFlagLLMReranker if architecture.startswith("LayerWise") else FlagLLMReranker
        halves = {"use_fp16": spec.get("dtype") == "float16", "use_bf16": spec.get("dtype") == "bfloat16"}
        reranker = kind(spec["model"], devices=devices, **halves)
        precision = "bfloat16" if halves["use_bf16"] else "float16" if halves["use_fp16"] else "float32"
    else:
        from FlagEmbedding import FlagReranker

        reranker = FlagReranker(spec["model"], use_fp16=spec.get("dtype") == "float16", devices=devices)
        precision = "float16" if spec.get("dtype") == "float16" else "float32"
    _count_hf(reranker.model, counter, reranker.tokenizer.pad_token_id)
    score: Score = lambda query, documents: reranker.compute_score(  # noqa: E731
        [[query, d] for d in documents], max_length=spec["max_length"]
    )
    return score, f"torch {precision}"


# Each loads its system and returns the scoring call and the precision it really runs in.
SYSTEMS: dict[str, Callable[[dict[str, Any], _Counter], tuple[Score, str]]] = {
    "crossrank": _crossrank,
    "crossrank-no-prefix-reuse": lambda spec, counter: _crossrank(spec, counter, prefix_reuse=False),
    "sentence-transformers": _sentence_transformers,
    "flagembedding": _flagembedding,
    "sentence-transformers-onnx": lambda spec, counter: _sentence_transformers_onnx(spec, counter, int8=False),
    "sentence-transformers-onnx-int8": lambda spec, counter: _sentence_transformers_onnx(spec, counter, int8=True),
    "sentence-transformers-openvino": lambda spec, counter: _sentence_transformers_openvino(spec, counter, int8=False),
    "sentence-transformers-openvino-int8": lambda spec, counter: _sentence_transformers_openvino(
        spec, counter, int8=True
    ),
}


def _gpu() -> tuple[int | None, str | None]:
    """Peak GPU memory and the GPU's name, where the system itself loaded torch and ran on CUDA."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.max_memory_allocated():
        return None, None
    return int(torch.cuda.max_memory_allocated()), str(torch.cuda.get_device_name())


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Load ``spec['system']``, score the workload once to warm up, then time every query."""
    workload = json.loads(Path(spec["workload"]).read_text())
    queries: list[dict[str, Any]] = workload["queries"]
    counter: _Counter = [0, 0, 0]
    started = time.perf_counter()
    score, precision = SYSTEMS[spec["system"]](spec, counter)
    load_seconds = time.perf_counter() - started
    score(queries[0]["query"], queries[0]["documents"])
    first_score_seconds = time.perf_counter() - started
    counter[:] = [0, 0, 0]
    latencies = []
    for done, item in enumerate(queries, start=1):
        began = time.perf_counter()
        score(item["query"], item["documents"])
        latencies.append(time.perf_counter() - began)
        _emit("progress", done=done, total=len(queries))
    peak_gpu_bytes, gpu_name = _gpu()
    return {
        "cpu_precision": spec.get("cpu_precision"),
        "system": spec["system"],
        "precision": precision,
        "load_seconds": load_seconds,
        "first_score_seconds": first_score_seconds,
        "latencies": latencies,
        "pairs": sum(len(item["documents"]) for item in queries),
        "real_tokens": counter[0],
        "computed_tokens": counter[1],
        "real_token_squares": counter[2],
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "peak_gpu_bytes": peak_gpu_bytes,
        "gpu": gpu_name,
    }


def main(argv: list[str]) -> int:
    """Run the spec in ``argv[1]`` and print the result as the last JSON line."""
    spec = json.loads(Path(argv[1]).read_text())
    try:
        result = run(spec)
    except Exception as exc:  # any failure of a peer is reported, not raised: the others still run
        # crossrank's own errors keep their class and fix, so `crossrank bench` exits as `crossrank rerank` does.
        _emit(
            "error",
            system=spec["system"],
            message=f"{type(exc).__name__}: {exc}",
            classes=[cls.__name__ for cls in type(exc).__mro__],
            error_message=getattr(exc, "message", None),
            fix=getattr(exc, "fix", None),
        )
        return 1
    _emit("result", **result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
