"""`crossrank bench`: generated workloads, the report's JSON schema, peers side by side, capacity, failures."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from conftest import subprocess_env
from crossrank.engine.tokenizer import PairTokenizer
from crossrank.errors import ConfigError
from crossrank.tools.bench import BenchOptions, SystemResult, make_workload, model_flops, plan_capacity

# A Python whose environment holds the OpenVINO peers (see test_openvino_peers_quantize_offline).
OPENVINO_PEER_PYTHON = "CROSSRANK_TEST_OPENVINO_PYTHON"
_NUMBER = {"type": "number"}
_RESULT = {
    "type": "object",
    "required": [
        "system",
        "precision",
        "pairs_per_second",
        "tokens_per_second",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "padding_efficiency",
        "peak_rss_bytes",
        "peak_gpu_bytes",
        "load_seconds",
        "first_score_seconds",
        "pairs",
        "requests",
        "seconds",
        "model_tflops",
        "mfu",
        "gpu",
        "error",
    ],
    "properties": {
        "system": {"type": "string"},
        "precision": {"type": "string"},
        "pairs_per_second": _NUMBER,
        "tokens_per_second": {"type": ["number", "null"]},
        "p50_ms": _NUMBER,
        "p95_ms": _NUMBER,
        "p99_ms": _NUMBER,
        "padding_efficiency": {"type": ["number", "null"]},
        "peak_rss_bytes": {"type": "integer"},
        "peak_gpu_bytes": {"type": ["integer", "null"]},
        "pairs": {"type": "integer"},
        "requests": {"type": "integer"},
        "model_tflops": {"type": ["number", "null"]},
        "mfu": {"type": ["number", "null"]},
        "gpu": {"type": ["string", "null"]},
        "error": {"type": ["string", "null"]},
    },
}
REPORT_SCHEMA = {
    "type": "object",
    "required": ["options", "machine", "workload", "results", "ratios", "capacity"],
    "properties": {
        "machine": {
            "type": "object",
            "required": ["cpu", "cores", "flags", "python", "crossrank"],
            "properties": {"flags": {"type": "array", "items": {"type": "string"}}},
        },
        "workload": {
            "type": "object",
            "required": ["kind", "seed", "queries", "docs", "document_tokens_mean"],
        },
        "results": {"type": "array", "minItems": 1, "items": _RESULT},
        "ratios": {"type": "object", "additionalProperties": _NUMBER},
        "capacity": {
            "type": ["object", "null"],
            "required": ["target_rps", "rps_per_replica", "replicas", "utilisation", "p95_ms"],
        },
    },
}


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    [done] = benches(args)
    return done


def benches(*runs: Sequence[str], timeout: float = 600) -> list[subprocess.CompletedProcess[str]]:
    """Several ``crossrank bench`` runs at once, each as ``bench`` runs it; their results in order.

    A run spends most of its time on one core importing torch and transformers and loading the tokenizer (its
    systems run one after the other), so independent runs overlap well even on two cores.
    """
    env = subprocess_env(COLUMNS="200")
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "crossrank", "bench", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for args in runs
    ]
    deadline = time.monotonic() + timeout
    done = []
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=max(deadline - time.monotonic(), 0))
            done.append(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    return done


@pytest.fixture(scope="module")
def tokenizer(xlmr_pair_tokenizer: PairTokenizer) -> PairTokenizer:
    return xlmr_pair_tokenizer


@pytest.mark.parametrize(("kind", "low", "high"), [("rag", 30, 500), ("short", 8, 48), ("long", 2000, 8000)])
def test_workload_lengths_are_exact_tokens(tokenizer: PairTokenizer, kind: str, low: int, high: int) -> None:
    workload = make_workload(kind, tokenizer, queries=2, docs=6, seed=1)
    for item in workload["queries"]:
        encoded = tokenizer.encode_documents(item["documents"])
        assert [len(e.ids) for e in encoded] == item["document_tokens"]
        assert all(low <= n <= high for n in item["document_tokens"])
        assert 4 <= len(tokenizer.encode_documents([item["query"]])[0].ids) <= 16
    assert workload["summary"]["kind"] == kind


def test_workload_follows_its_seed(tokenizer: PairTokenizer) -> None:
    first = make_workload("rag", tokenizer, queries=2, docs=5, seed=7)
    assert make_workload("rag", tokenizer, queries=2, docs=5, seed=7) == first
    assert make_workload("rag", tokenizer, queries=2, docs=5, seed=8) != first
    capacity = make_workload("capacity", tokenizer, queries=1, docs=3, doc_tokens=77)
    assert capacity["queries"][0]["document_tokens"] == [77, 77, 77]


def test_capacity_plan() -> None:
    # 10 requests in 5 s: 0.5 s each, 2 requests/s per replica.
    result = SystemResult(
        "crossrank", "torch float32", 40.0, 4000.0, 480.0, 600.0, 650.0, 0.9, 1, None, 1.0, 2.0, 200, 10, 5.0
    )
    plan = plan_capacity(result, 37.5)
    assert plan.rps_per_replica == pytest.approx(2.0)
    assert plan.replicas == 19  # 37.5 / 2 = 18.75
    assert plan.utilisation == pytest.approx(37.5 / 38)
    assert plan.p95_ms > 600  # queueing at ~99% load adds to the service time
    with pytest.raises(ConfigError, match="positive"):
        plan_capacity(result, 0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"workload": "huge"}, "workload 'huge'"),
        ({"compare": ("tei",)}, "unknown peer 'tei'"),
        ({"docs": 0}, "least 1"),
        ({"peak_tflops": 0.0}, "peak_tflops must be positive"),
    ],
)
def test_bad_options(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BenchOptions(model="m", **options)


def test_model_flops_of_the_m3_shape(m3_config: dict[str, Any]) -> None:
    # 24 layers x (4 h^2 + 2 h i) = 302M weights in the matrices: 2 FLOPs each per token (604 MFLOP), plus
    # attention's 4 h per token pair: 24 x 4 x 1024 x 512 = 50 MFLOP per token of a 512-token sequence.
    per_token = model_flops(m3_config, 512, 512 * 512)
    assert per_token is not None
    assert per_token / 512 == pytest.approx(2 * 24 * (4 * 1024**2 + 2 * 1024 * 4096) + 4 * 24 * 1024 * 512)
    assert per_token / 512 == pytest.approx(654e6, rel=0.01)
    # Attention grows with the square of the length; padding adds nothing (the counts are of real tokens).
    two_short = model_flops(m3_config, 512, 2 * 256**2)
    assert two_short is not None and two_short < per_token
    assert model_flops({"model_type": "t5"}, 10, 100) is None


@pytest.mark.slow
def test_bench_end_to_end_with_a_peer(tiny_xlmr_dir: Path, tmp_path: Path) -> None:
    full = [
        "-m",
        str(tiny_xlmr_dir),
        "--queries",
        "3",
        "--docs",
        "12",
        "--compare",
        "sentence-transformers",
        "--target-rps",
        "50",
        "--plot",
        str(tmp_path / "bench.png"),
        "--peak-tflops",
        "0.5",
        "--json",
    ]
    out, table = benches(full, ["-m", str(tiny_xlmr_dir), "--queries", "2", "--docs", "4", "--workload", "short"])
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    jsonschema.validate(report, REPORT_SCHEMA)
    ours, peer = report["results"]
    assert (ours["system"], peer["system"]) == ("crossrank", "sentence-transformers")
    assert peer["precision"] == "torch float32"
    assert ours["precision"] in ("torch float32", "torch bfloat16-autocast")
    for result in (ours, peer):
        assert result["error"] is None
        assert result["pairs"] == 36
        assert result["requests"] == 3
        assert 0 < result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"]
        assert result["peak_rss_bytes"] > 50 * 2**20
        assert 0 < result["padding_efficiency"] <= 1
        assert result["first_score_seconds"] >= result["load_seconds"] > 0
    assert ours["tokens_per_second"] > 0
    for result in (ours, peer):  # both ran torch on the CPU: FLOPs counted at the embedding, MFU from --peak-tflops
        assert result["gpu"] is None
        assert result["model_tflops"] > 0
        assert result["mfu"] == pytest.approx(result["model_tflops"] / 0.5)
    assert report["ratios"]["sentence-transformers"] == pytest.approx(
        ours["pairs_per_second"] / peer["pairs_per_second"]
    )
    assert report["capacity"]["replicas"] >= 1
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert table.returncode == 0, table.stderr
    assert "short workload: 2 queries x 4 documents" in table.stdout
    assert "crossrank" in table.stdout


@pytest.mark.slow
def test_int8_computes_no_padding(tiny_xlmr_dir: Path, tmp_path: Path) -> None:
    model = shutil.copytree(tiny_xlmr_dir, tmp_path / "model")  # the export is written beside the model
    out = bench("-m", str(model), "--queries", "2", "--docs", "10", "--backend", "onnx", "--quantize", "int8", "--json")
    assert out.returncode == 0, out.stderr
    [ours] = json.loads(out.stdout)["results"]
    assert ours["precision"] == "onnx int8"
    assert ours["padding_efficiency"] == 1.0  # each pair runs alone: computed tokens are the real ones


@pytest.mark.slow
def test_a_failing_peer_is_reported_and_the_rest_still_runs(tiny_xlmr_dir: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-python"
    one = ["-m", str(tiny_xlmr_dir), "--queries", "1", "--docs", "3"]
    out, bad, wrong_python = benches(
        [*one, "--compare", "flagembedding", "--json"],
        [*one, "--compare", "flagembedding"],
        [*one, "--compare", "sentence-transformers", "--peer-python", str(missing), "--json"],
    )
    report = json.loads(out.stdout)
    flag = report["results"][1]
    if flag["error"] is None:
        pytest.skip("FlagEmbedding is installed here; nothing fails")
    assert out.returncode == 1
    assert "FlagEmbedding" in flag["error"]
    assert report["results"][0]["error"] is None
    assert "flagembedding" not in report["ratios"]

    assert bad.returncode == 1
    assert "failed" in bad.stdout
    assert wrong_python.returncode == 1
    assert "no-python" in json.loads(wrong_python.stdout)["results"][1]["error"]


@pytest.mark.slow
def test_openvino_peers_quantize_offline(tiny_xlmr_dir: Path, tmp_path: Path) -> None:
    """sentence-transformers' OpenVINO backend and its static int8 helper, calibrated on the workload (no hub).

    optimum-intel pins huggingface_hub below crossrank's floor, so the peers run from their own environment,
    as users run them (``--peer-python``): point CROSSRANK_TEST_OPENVINO_PYTHON at its Python to run this.
    """
    peer_python = os.environ.get(OPENVINO_PEER_PYTHON)
    if not peer_python:
        pytest.skip(
            f"set {OPENVINO_PEER_PYTHON} to a Python with sentence-transformers, optimum-intel[openvino] and "
            "datasets (they cannot share crossrank's environment: optimum-intel pins huggingface_hub < 1.22)"
        )
    model = tmp_path / "model"  # the helper writes its export into the model's folder
    shutil.copytree(tiny_xlmr_dir, model)
    peers = "sentence-transformers-openvino,sentence-transformers-openvino-int8"
    out = bench(
        "-m", str(model), "--queries", "2", "--docs", "5", "--compare", peers, "--peer-python", peer_python, "--json"
    )
    assert out.returncode == 0, out.stdout + out.stderr
    _ours, fp32, int8 = json.loads(out.stdout)["results"]
    assert (fp32["precision"], int8["precision"]) == ("openvino float32", "openvino int8 (static)")
    assert fp32["error"] is None and int8["error"] is None
    assert (model / "openvino" / "openvino_model_qint8_quantized.xml").is_file()


@pytest.mark.slow
def test_bad_cli_input_exits_2(fake_model_dir: Path) -> None:
    no_tokenizer = bench("-m", "m3-shape")
    assert no_tokenizer.returncode == 2
    assert "--tokenizer" in no_tokenizer.stderr
    bad_peer = bench("-m", str(fake_model_dir), "--compare", "tei")
    assert bad_peer.returncode == 2
    assert "unknown peer 'tei'" in bad_peer.stderr


def test_m3_shape_is_bge_reranker_v2_m3s_exact_config(m3_config: dict[str, object]) -> None:
    from crossrank.backends.synthetic import M3_SHAPE

    meta = {"_name_or_path", "transformers_version", "torch_dtype"}
    assert {k: v for k, v in m3_config.items() if k not in meta} == M3_SHAPE


@pytest.mark.slow
def test_m3_shape_is_built_aside_so_an_interrupted_build_leaves_no_weights(
    xlmr_tokenizer_dir: Path, m3_config: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The build runs with a shrunk config here (the real one writes 2.3 GB); the folder logic is the same."""
    from crossrank.backends import synthetic
    from crossrank.tools.shapes import m3_shape

    monkeypatch.setattr(synthetic, "M3_SHAPE", {**m3_config, "num_hidden_layers": 1, "hidden_size": 32,
                                                 "num_attention_heads": 4, "intermediate_size": 64})  # fmt: skip
    real_build = synthetic.build_random_model

    def killed_after_writing(*args: Any, **kwargs: Any) -> Path:
        real_build(*args, **kwargs)
        raise KeyboardInterrupt  # as a Ctrl-C or a timeout's kill between writing and finishing

    target = tmp_path / "m3-shape"
    monkeypatch.setattr(synthetic, "build_random_model", killed_after_writing)
    with pytest.raises(KeyboardInterrupt):
        m3_shape(xlmr_tokenizer_dir, target)
    assert not (target / "model.safetensors").exists()
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(synthetic, "build_random_model", real_build)
    assert m3_shape(xlmr_tokenizer_dir, target) == target
    assert (target / "model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["m3-shape"]  # the stopped build's files went with it
