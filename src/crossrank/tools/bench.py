"""`crossrank bench`: crossrank and its peers side by side, on the same model and inputs, in one run.

Workloads are generated from a seed: ``rag`` (each query with ``docs`` passages of 30-500 tokens,
most near 150, as retrieval returns them), ``short`` (pairs of at most 64 tokens), ``long``
(documents of 2k-8k tokens, which crossrank reads in windows and its peers truncate) and
``capacity`` (``docs`` documents of exactly ``doc_tokens`` tokens, for replica planning). Each system
runs in its own process (``bench_runner.py``), one after the other, so none shares memory, threads
or warm caches with another; ratios come from the same run, since these machines are noisy.

Models of a real reranker's exact shape with random weights (same FLOPs and memory traffic, meaningless
scores) stand in for downloads: ``tools/shapes.py``. ``crossrank-no-prefix-reuse`` is crossrank with a decoder's shared
prompt prefix run again for every document, so the prefix reuse's gain is measured side by side.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crossrank import __version__, errors
from crossrank.backends.cpu import cpu_flags, cpu_model
from crossrank.engine.tokenizer import PairTokenizer
from crossrank.errors import ConfigError, InputError
from crossrank.tools import bench_runner
from crossrank.tools.shapes import SHAPES

__all__ = [
    "GPU_PEAK_TFLOPS",
    "PEERS",
    "WORKLOADS",
    "BenchOptions",
    "BenchReport",
    "Capacity",
    "SystemResult",
    "make_workload",
    "model_flops",
    "plan_capacity",
    "plot_report",
    "run_bench",
]

WORKLOADS = ("rag", "short", "long", "capacity")
PEERS = (
    "sentence-transformers",
    "flagembedding",
    "sentence-transformers-onnx",
    "sentence-transformers-onnx-int8",
    "sentence-transformers-openvino",
    "sentence-transformers-openvino-int8",
    "crossrank-no-prefix-reuse",
)
# CPU flags that decide which kernels run (printed with every result).
# Dense float16/bfloat16 tensor-core peaks (TFLOP/s, without sparsity) of common GPUs, by a part of the name CUDA
# gives them; the first match wins, so more specific names come first. Others: pass --peak-tflops.
GPU_PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100", 989.4),
    ("H200", 989.4),
    ("H800", 989.4),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.1),
    ("L4", 121.0),
    ("A10", 125.0),
    ("V100", 125.0),
    ("T4", 65.0),
)

_KERNEL_FLAGS = ("avx2", "avx512f", "avx_vnni", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
# Common words of encyclopedia text: generated documents read like prose to the tokenizer.
_VOCABULARY = (
    "the of and to in is was for on that with as by at from his her their it an be are this which or had "
    "river city music history school science water energy market system team season film album world war "
    "government company language species century north south island church station college district league "
    "population village county player record research theory program network design model data health court"
)
_WORDS = _VOCABULARY.split()
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True, kw_only=True, slots=True)
class BenchOptions:
    """What to measure.

    Attributes:
        model: the model folder every system loads (``m3_shape`` builds one with bge-reranker-v2-m3's shape).
        workload: one of ``WORKLOADS``.
        queries: calls timed, one query with all its documents each.
        docs: documents per query.
        doc_tokens: tokens per document (``capacity`` workload).
        seed: the workload's random seed.
        compare: peers to run besides crossrank (``PEERS``).
        peer_python: interpreter for the peers (default: this one).
        device, dtype, backend, quantize, max_length: crossrank's options; peers get device, max_length
            and the precision ``dtype`` names (``auto``: each peer's default, which for sentence-transformers is
            the checkpoint's own, bfloat16 for Qwen3-Reranker; FlagEmbedding takes only its half precisions).
        peak_tflops: the device's peak TFLOP/s in the precision measured, for model FLOPs utilisation (MFU);
            ``None``: known GPUs' float16/bfloat16 peak (``GPU_PEAK_TFLOPS``), else no MFU.
    """

    model: str
    workload: str = "rag"
    queries: int = 8
    docs: int = 100
    doc_tokens: int = 512
    seed: int = 0
    compare: tuple[str, ...] = ()
    peer_python: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    backend: str = "torch"
    quantize: str = "none"
    max_length: int = 512
    peak_tflops: float | None = None

    def __post_init__(self) -> None:
        if self.peak_tflops is not None and not self.peak_tflops > 0:
            raise ConfigError(f"peak_tflops must be positive, got {self.peak_tflops}")
        if self.workload not in WORKLOADS:
            raise ConfigError(f"workload {self.workload!r} is not one of {', '.join(WORKLOADS)}")
        unknown = [p for p in self.compare if p not in PEERS]
        if unknown:
            raise ConfigError(f"unknown peer {unknown[0]!r}", fix=f"compare with: {', '.join(PEERS)}")
        if min(self.queries, self.docs, self.doc_tokens) < 1:
            raise ConfigError("queries, docs and doc_tokens must be at least 1")


@dataclass(frozen=True, slots=True)
class SystemResult:
    """One system's figures (times in seconds, memory in bytes).

    Tokens and padding are counted at the model's token embedding, so they are ``None`` for a system
    that runs no torch model (sentence-transformers' ONNX backends). ``model_tflops`` is the model's
    FLOPs on the real tokens (``model_flops``) per second; ``mfu`` divides it by the device's peak.
    ``cpu_precision``: what crossrank's ``dtype="auto"`` measured and chose on this CPU (``None`` elsewhere).
    """

    system: str
    precision: str
    pairs_per_second: float
    tokens_per_second: float | None
    p50_ms: float
    p95_ms: float
    p99_ms: float
    padding_efficiency: float | None
    peak_rss_bytes: int
    peak_gpu_bytes: int | None
    load_seconds: float
    first_score_seconds: float
    pairs: int
    requests: int
    seconds: float
    model_tflops: float | None = None
    mfu: float | None = None
    gpu: str | None = None
    error: str | None = None
    cpu_precision: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Capacity:
    """Replicas of this machine needed for a request rate, from the measured service time."""

    target_rps: float
    rps_per_replica: float
    replicas: int
    utilisation: float
    p95_ms: float


@dataclass(slots=True)
class BenchReport:
    """A whole run: the machine, the options, each system and crossrank's ratio to each peer."""

    options: dict[str, Any]
    machine: dict[str, Any]
    workload: dict[str, Any]
    results: list[SystemResult] = field(default_factory=list)
    ratios: dict[str, float] = field(default_factory=dict)
    capacity: Capacity | None = None

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (``crossrank bench --json``)."""
        return asdict(self)


def machine_facts() -> dict[str, Any]:
    """CPU model, core count and the SIMD flags that pick kernels; printed with every result."""
    flags = cpu_flags()
    return {
        "cpu": cpu_model() or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "flags": [f for f in _KERNEL_FLAGS if f in flags],
        "python": platform.python_version(),
        "crossrank": __version__,
    }


def _token_lengths(kind: str, count: int, doc_tokens: int, rng: np.random.Generator) -> list[int]:
    if kind == "rag":
        # Passage lengths of a retrieval pipeline: log-normal around 150 tokens, cut to 30-500.
        return [int(x) for x in np.clip(rng.lognormal(math.log(150), 0.6, count), 30, 500)]
    if kind == "short":
        return [int(x) for x in rng.integers(8, 48, count)]
    if kind == "long":
        return [int(x) for x in rng.integers(2000, 8001, count)]
    return [doc_tokens] * count


def _text_of(tokenizer: PairTokenizer, target: int, rng: np.random.Generator) -> str:
    """Random words cut at exactly ``target`` tokens of ``tokenizer``."""
    words = " ".join(rng.choice(_WORDS, size=target + 8))
    encoding = tokenizer.encode_documents([words])[0]
    while len(encoding.ids) < target:  # one word is at least one token, so this is rare
        words += " " + " ".join(rng.choice(_WORDS, size=target))
        encoding = tokenizer.encode_documents([words])[0]
    return words[: encoding.offsets[target - 1][1]]


def make_workload(
    kind: str, tokenizer: PairTokenizer, *, queries: int, docs: int, doc_tokens: int = 512, seed: int = 0
) -> dict[str, Any]:
    """``queries`` queries of 4-16 tokens, each with ``docs`` documents of the workload's lengths."""
    if kind not in WORKLOADS:
        raise ConfigError(f"workload {kind!r} is not one of {', '.join(WORKLOADS)}")
    rng = np.random.default_rng(seed)
    items: list[dict[str, Any]] = []
    for _ in range(queries):
        lengths = _token_lengths(kind, docs, doc_tokens, rng)
        items.append(
            {
                "query": _text_of(tokenizer, int(rng.integers(4, 17)), rng),
                "documents": [_text_of(tokenizer, n, rng) for n in lengths],
                "document_tokens": lengths,
            }
        )
    every: list[int] = [n for item in items for n in item["document_tokens"]]
    summary = {
        "kind": kind,
        "seed": seed,
        "queries": queries,
        "docs": docs,
        "document_tokens_mean": float(np.mean(every)),
        "document_tokens_min": min(every),
        "document_tokens_max": max(every),
    }
    return {"summary": summary, "queries": items}


def model_flops(config: dict[str, Any], real_tokens: int, token_squares: int) -> float | None:
    """Forward FLOPs of a BERT-like encoder or a decoder (LLM) on unpadded sequences (``None`` for other configs).

    Per token, 2 FLOPs for each weight of the attention projections (4 h^2; a decoder's grouped keys and values
    have fewer) and the feed-forward (2 h i; 3 h i for a decoder's gated one) of every layer; per pair of tokens of
    one sequence, 4 h for the attention scores and their weighted sum (half the pairs for a decoder's causal
    attention). ``token_squares`` is the sum of each sequence's length squared. Embeddings, norms, softmax and the
    classifier head are left out (under 1% for bge-reranker-v2-m3; a decoder reranker's score reads only one or two
    rows of its language-model head). A decoder's figure is the work of its whole prompts, shared prefix included.
    """
    try:
        h, layers, inner = (int(config[k]) for k in ("hidden_size", "num_hidden_layers", "intermediate_size"))
        if "num_key_value_heads" not in config:
            return 2.0 * layers * (4 * h * h + 2 * h * inner) * real_tokens + 4.0 * layers * h * token_squares
        heads, groups = int(config["num_attention_heads"]), int(config["num_key_value_heads"])
        width = int(config.get("head_dim") or h // heads)
    except (KeyError, TypeError, ValueError):
        return None
    projections = 2 * h * heads * width + 2 * h * groups * width
    return 2.0 * layers * (projections + 3 * h * inner) * real_tokens + 2.0 * layers * heads * width * token_squares


def _peak_tflops(given: float | None, precision: str, gpu: str | None) -> float | None:
    if given is not None:
        return given
    if gpu is None or not precision.endswith(("float16", "bfloat16")):
        return None  # the table holds half-precision peaks
    return next((peak for name, peak in GPU_PEAK_TFLOPS if name in gpu), None)


def _summarise(raw: dict[str, Any], config: dict[str, Any], peak_tflops: float | None) -> SystemResult:
    latencies = np.asarray(raw["latencies"]) * 1000
    seconds = float(sum(raw["latencies"]))
    computed = raw["computed_tokens"]
    flops = model_flops(config, raw["real_tokens"], raw["real_token_squares"]) if computed else None
    tflops = None if flops is None else flops / seconds / 1e12
    peak = _peak_tflops(peak_tflops, raw["precision"], raw["gpu"])
    return SystemResult(
        system=raw["system"],
        precision=raw["precision"],
        pairs_per_second=raw["pairs"] / seconds,
        tokens_per_second=raw["real_tokens"] / seconds if computed else None,
        p50_ms=float(np.percentile(latencies, 50)),
        p95_ms=float(np.percentile(latencies, 95)),
        p99_ms=float(np.percentile(latencies, 99)),
        padding_efficiency=raw["real_tokens"] / computed if computed else None,
        peak_rss_bytes=int(raw["peak_rss_bytes"]),
        peak_gpu_bytes=raw["peak_gpu_bytes"],
        load_seconds=raw["load_seconds"],
        first_score_seconds=raw["first_score_seconds"],
        pairs=raw["pairs"],
        requests=len(raw["latencies"]),
        seconds=seconds,
        model_tflops=tflops,
        mfu=None if tflops is None or peak is None else tflops / peak,
        gpu=raw["gpu"],
        cpu_precision=raw.get("cpu_precision"),
    )


def _failed(system: str, message: str) -> SystemResult:
    nan = float("nan")
    return SystemResult(system, "", nan, nan, nan, nan, nan, None, 0, None, nan, nan, 0, 0, nan, error=message)


def _raise_crossrank_error(event: dict[str, Any]) -> None:
    """Raise crossrank's own error (bad option, model unusable...) again here, so it is not a row of the table."""
    classes = event.get("classes") or []
    if "CrossrankError" not in classes or event.get("error_message") is None:
        return
    for name in classes:
        cls = getattr(errors, name, None)
        # The first class of the error's ancestry that takes (message, fix=...) rebuilds it.
        if isinstance(cls, type) and issubclass(cls, errors.CrossrankError) and "__init__" not in vars(cls):
            raise cls(str(event["error_message"]), fix=event.get("fix"))


def _run_system(
    system: str, python: str, spec: dict[str, Any], folder: Path, progress: Progress, peak_tflops: float | None
) -> SystemResult:
    spec_path = folder / f"{system}.json"
    spec_path.write_text(json.dumps({**spec, "system": system}))
    command = [python, bench_runner.__file__, str(spec_path)]
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    except OSError as exc:
        return _failed(system, f"cannot run {python}: {exc}")
    assert process.stdout is not None
    last: dict[str, Any] = {}
    for line in process.stdout:
        if not line.startswith("{"):
            continue  # a library printing on stdout
        last = json.loads(line)
        if last["event"] == "progress":
            progress(system, last["done"], last["total"])
    stderr = process.stderr.read() if process.stderr else ""
    process.wait()
    if last.get("event") == "result":
        config = json.loads((Path(spec["model"]) / "config.json").read_text())
        return _summarise(last, config, peak_tflops)
    if last.get("event") == "error":
        if system.startswith("crossrank"):
            _raise_crossrank_error(last)
        return _failed(system, last["message"])
    tail = stderr.strip().splitlines()[-1:] or [f"exit code {process.returncode}"]
    return _failed(system, f"{python} stopped: {tail[0]}")


def _python_of(system: str, peer_python: str | None) -> str:
    return sys.executable if system.startswith("crossrank") or peer_python is None else peer_python


def plan_capacity(result: SystemResult, target_rps: float) -> Capacity:
    """Replicas for ``target_rps`` requests/s, each replica serving one request at a time.

    The expected p95 adds the M/D/1 mean queueing delay at the resulting utilisation to the
    measured p95 service time.
    """
    if target_rps <= 0:
        raise ConfigError(f"target rps must be positive, got {target_rps}")
    service = result.seconds / result.requests
    per_replica = 1 / service
    replicas = max(math.ceil(target_rps / per_replica), 1)
    utilisation = target_rps / (replicas * per_replica)
    if utilisation >= 1:  # exactly at capacity: one more replica keeps the queue finite
        replicas += 1
        utilisation = target_rps / (replicas * per_replica)
    waiting = utilisation / (2 * (1 - utilisation)) * service
    return Capacity(target_rps, per_replica, replicas, utilisation, result.p95_ms + waiting * 1000)


def run_bench(
    options: BenchOptions,
    *,
    target_rps: float | None = None,
    progress: Progress | None = None,
) -> BenchReport:
    """Generate the workload, run crossrank and each peer in turn, and compare."""
    model_dir = Path(options.model)
    if not (model_dir / "config.json").is_file():
        raise InputError(
            f"{options.model} is not a model folder",
            fix=f"download it first (crossrank download MODEL), or use --model with one of {', '.join(SHAPES)}",
        )
    tokenizer = PairTokenizer.from_pretrained(model_dir)
    workload = make_workload(
        options.workload,
        tokenizer,
        queries=options.queries,
        docs=options.docs,
        doc_tokens=options.doc_tokens,
        seed=options.seed,
    )
    report = BenchReport(options=asdict(options), machine=machine_facts(), workload=workload["summary"])
    spec: dict[str, Any] = {
        "model": str(model_dir),
        "device": options.device,
        "dtype": options.dtype,
        "backend": options.backend,
        "quantize": options.quantize,
        "max_length": options.max_length,
    }
    report_progress = progress or (lambda _system, _done, _total: None)
    with tempfile.TemporaryDirectory(prefix="crossrank-bench-") as folder:
        workload_path = Path(folder) / "workload.json"
        workload_path.write_text(json.dumps(workload))
        spec["workload"] = str(workload_path)
        systems: Sequence[tuple[str, str]] = [
            ("crossrank", sys.executable),
            # crossrank's own variants run here; the peers in their environment.
            *((peer, _python_of(peer, options.peer_python)) for peer in options.compare),
        ]
        for system, python in systems:
            report.results.append(_run_system(system, python, spec, Path(folder), report_progress, options.peak_tflops))
    ours = report.results[0]
    for peer in report.results[1:]:
        if ours.error is None and peer.error is None:
            report.ratios[peer.system] = ours.pairs_per_second / peer.pairs_per_second
    if target_rps is not None and ours.error is None:
        report.capacity = plan_capacity(ours, target_rps)
    return report


def plot_report(report: BenchReport, path: Path) -> None:
    """Bars of pairs/s and p95 latency by system, saved as an image (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ConfigError("--plot needs matplotlib", fix="pip install 'crossrank[bench]'") from exc
    ok = [r for r in report.results if r.error is None]
    names = [r.system for r in ok]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.bar(names, [r.pairs_per_second for r in ok], color="tab:blue")
    left.set_title("throughput (pairs/s, higher is better)")
    right.bar(names, [r.p95_ms for r in ok], color="tab:orange")
    right.set_title("p95 latency per query (ms, lower is better)")
    machine = report.machine
    figure.suptitle(f"{report.workload['kind']} workload, {Path(report.options['model']).name}, {machine['cpu']}")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
