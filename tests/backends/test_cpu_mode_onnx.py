"""dtype="auto" on the ONNX backend: float32 or int8, from a probe layer timed as the backend runs each mode.

The probe's layer is checked against BERT's own layer (transformers), the decision with injected timings and the
real measurement within its bound; the backend runs what was decided, and dtype=/quantize=/CROSSRANK_DTYPE win.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import build_tiny_xlmr

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed: pip install -e '.[onnx]'")

import onnxruntime as ort
from onnx import numpy_helper

from crossrank import Reranker
from crossrank.backends import cpu_mode, onnx_probe
from crossrank.backends import onnx as onnx_backend
from crossrank.backends.cpu_mode import CPU_MODES, ONNX_MODES, CpuModeDecision, cpu_mode_of, decide, gated
from crossrank.backends.onnx_probe import layer_graph, time_onnx_modes

TINY = {"model_type": "bert", "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4}
FORCED = CpuModeDecision("int8", {"float32": 1.0, "int8": 2.5}, "measured")


@pytest.fixture(autouse=True)
def decisions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache folder and a process memory of this test's own."""
    folder = tmp_path / "cpu-precision"
    monkeypatch.setattr(cpu_mode, "decision_folder", lambda: folder)
    monkeypatch.setattr(cpu_mode, "_decided", {})
    return folder


def test_each_backend_measures_only_its_own_gated_modes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(cpu_mode.GATED_MODES, "bert", frozenset({"bfloat16-autocast", "bfloat16", "int8"}))
    monkeypatch.setitem(cpu_mode.GATED_MODES, "xlm-roberta", frozenset({"bfloat16-autocast", "bfloat16"}))
    assert gated("bert", ONNX_MODES) == ("int8",)
    assert gated("bert", CPU_MODES) == ("bfloat16-autocast", "bfloat16")
    assert gated("xlm-roberta", ONNX_MODES) == ()  # int8 not gated for it: float32, nothing timed
    assert gated("t5", CPU_MODES) == ()


@pytest.mark.parametrize(("int8_seconds", "chosen"), [(1.0, "int8"), (2.8, "float32"), (4.0, "float32")])
def test_int8_is_chosen_only_when_clearly_faster(int8_seconds: float, chosen: str) -> None:
    asked: list[list[str]] = []

    def measure(modes: list[str]) -> dict[str, float]:
        asked.append(modes)
        return {"float32": 3.0, "int8": int8_seconds}

    key = cpu_mode.decision_key(TINY, threads=2, runtime={"onnxruntime": "1.32.0"}, cpu="AMD EPYC", flags=set())
    decision = decide(key, ("int8",), measure)
    assert asked == [["float32", "int8"]]
    assert (decision.mode, decision.runtime()) == (chosen, "onnxruntime")


@pytest.mark.slow  # imports transformers' BERT
def test_the_probe_layer_is_bert_s_layer() -> None:
    """The graph timed is the layer the model runs: BERT's (transformers) with the same weights gives its output."""
    import torch
    from transformers import BertConfig
    from transformers.models.bert.modeling_bert import BertLayer

    graph = layer_graph({**TINY, "layer_norm_eps": 1e-12})
    random = np.random.default_rng(7)
    weights = {}
    for tensor in graph.graph.initializer:  # every weight, bias and norm random, so that each one is checked
        array = numpy_helper.to_array(tensor)
        if array.dtype == np.float32 and array.ndim:
            array = random.standard_normal(array.shape).astype(np.float32) * 0.3
            tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))
        weights[tensor.name] = array
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    hidden = random.standard_normal((2, 5, 32)).astype(np.float32)
    mask = np.zeros((2, 1, 1, 5), np.float32)
    mask[1, ..., 3:] = np.finfo(np.float32).min  # the second row is padded after 3 tokens
    [got] = session.run(None, {"hidden": hidden, "mask": mask})

    config = BertConfig(**{k: v for k, v in TINY.items() if k != "model_type"}, attn_implementation="eager")
    layer = BertLayer(config).eval()
    names = {"query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value"}
    names |= {"output": "attention.output.dense", "intermediate": "intermediate.dense", "down": "output.dense"}
    state = {f"{module}.weight": torch.from_numpy(weights[name].T.copy()) for name, module in names.items()}
    state |= {f"{module}.bias": torch.from_numpy(weights[f"{name}.bias"]) for name, module in names.items()}
    for index, module in ((1, "attention.output.LayerNorm"), (2, "output.LayerNorm")):
        state |= {f"{module}.weight": torch.from_numpy(weights[f"norm{index}.weight"])}
        state |= {f"{module}.bias": torch.from_numpy(weights[f"norm{index}.bias"])}
    layer.load_state_dict(state)
    with torch.inference_mode():
        out = layer(torch.from_numpy(hidden), attention_mask=torch.from_numpy(mask))
    expected = (out[0] if isinstance(out, tuple) else out).numpy()
    np.testing.assert_allclose(got[0], expected[0], atol=1e-4)
    np.testing.assert_allclose(got[1, :3], expected[1, :3], atol=1e-4)  # the padding's rows are not used


@pytest.mark.serial  # a time bound: alone on the machine (tests/run.py)
def test_a_real_measurement_of_a_tiny_shape_keeps_its_bound() -> None:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    time_onnx_modes(TINY, list(ONNX_MODES), options=options, seven_bit=False, budget=0.1)
    started = time.perf_counter()
    seconds = time_onnx_modes(TINY, list(ONNX_MODES), options=options, seven_bit=True, budget=0.3)
    elapsed = time.perf_counter() - started
    assert elapsed < 1.5  # the budget, a round past it, building and quantizing the layer
    assert set(seconds) == set(ONNX_MODES)
    assert all(0 < s < 0.3 for s in seconds.values())


@pytest.fixture(scope="module")
def tiny_model(
    tmp_path_factory: pytest.TempPathFactory, xlmr_tokenizer_dir: Path, m3_config: dict[str, object]
) -> Path:
    return build_tiny_xlmr(tmp_path_factory.mktemp("tiny-onnx-auto"), xlmr_tokenizer_dir, m3_config, seed=5)


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """measured_onnx_mode answers int8 and records the folders it was asked about."""
    folders: list[Path] = []

    def measured(model_dir: Path, **_: object) -> CpuModeDecision:
        folders.append(model_dir)
        return FORCED

    monkeypatch.setattr(onnx_backend, "measured_onnx_mode", measured)
    return folders


@pytest.mark.slow  # two exports of a tiny model
def test_auto_runs_the_int8_it_measured_and_explicit_options_win(
    tiny_model: Path, asked: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from crossrank.settings import Settings

    pairs = [("what is a cat", "a cat is a small animal"), ("what is a cat", "stocks fell")]
    with Reranker(str(tiny_model), backend="onnx", device="cpu") as auto:
        assert (auto.dtype, auto.fingerprint().values["dtype"]) == ("int8", "int8")
        assert cpu_mode_of(auto.scorer.backend) == FORCED.as_dict()
        auto_scores = auto.score(pairs)
    with Reranker(str(tiny_model), backend="onnx", device="cpu", quantize="int8") as forced:
        assert forced.dtype == "int8" and cpu_mode_of(forced.scorer.backend) is None
        assert forced.score(pairs) == auto_scores  # the same export, reused
    with Reranker(str(tiny_model), backend="onnx", device="cpu", dtype="float32") as exact:
        assert exact.dtype == "float32" and cpu_mode_of(exact.scorer.backend) is None
    monkeypatch.setenv("CROSSRANK_DTYPE", "float32")
    options = Settings(model=str(tiny_model), backend="onnx", device="cpu").reranker_options()
    with Reranker.from_options(options) as from_env:
        assert from_env.dtype == "float32"
    assert asked == [tiny_model]
    assert sorted(p.name.split("-")[1] for p in (tiny_model / ".crossrank").glob("onnx-*")) == ["fp32", "int8"]


@pytest.mark.slow  # one export of a tiny model
def test_a_family_without_the_int8_gate_runs_float32_and_times_nothing(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    timed: list[object] = []
    monkeypatch.setattr(onnx_probe, "time_onnx_modes", lambda *args, **kwargs: timed.append(args) or {})
    monkeypatch.setitem(cpu_mode.GATED_MODES, "xlm-roberta", frozenset({"bfloat16-autocast", "bfloat16"}))
    with Reranker(str(tiny_model), backend="onnx", device="cpu") as auto:
        assert auto.dtype == "float32"
        assert cpu_mode_of(auto.scorer.backend)["source"] == "not gated"  # type: ignore[index]
    assert timed == []


def test_no_room_for_the_probe_runs_float32_and_caches_nothing(
    decisions: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A temporary folder that cannot be written (full, read-only) leaves float32, for this process only."""
    from crossrank.backends.onnx_probe import measured_onnx_mode

    monkeypatch.setitem(cpu_mode.GATED_MODES, "bert", frozenset({"int8"}))
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps(TINY))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    decision = measured_onnx_mode(model_dir, options=ort.SessionOptions(), seven_bit=False)
    assert (decision.mode, decision.source) == ("float32", "not measured (the probe could not write its graphs)")
    assert not decisions.exists()
