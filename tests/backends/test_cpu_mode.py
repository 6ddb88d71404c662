"""dtype="auto" on CPU: the decision from measured timings, its cache and key, and what overrides it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from crossrank.backends import cpu_mode
from crossrank.backends.cpu import bfloat16_instructions
from crossrank.backends.cpu_mode import CpuModeDecision, choose_mode, cpu_mode_of, decide, decision_key

BOTH = frozenset({"bfloat16-autocast", "bfloat16"})
SHAPE = {"model_type": "xlm-roberta", "hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16}


@pytest.fixture(autouse=True)
def decisions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache folder and a process memory of this test's own."""
    monkeypatch.setattr(cpu_mode, "decision_folder", lambda: tmp_path)
    monkeypatch.setattr(cpu_mode, "_decided", {})
    return tmp_path


class Timer:
    """A measurement that returns the given seconds and counts its calls."""

    def __init__(self, **seconds: float) -> None:
        self.seconds = {mode.replace("_", "-"): s for mode, s in seconds.items()}
        self.calls: list[list[str]] = []

    def __call__(self, modes: list[str]) -> dict[str, float]:
        self.calls.append(modes)
        return {mode: self.seconds[mode] for mode in modes}


def key(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "threads": 2,
        "runtime": {"torch": "2.13.0+cpu"},
        "cpu": "AMD EPYC",
        "flags": {"avx512_bf16"},
    }
    shape = changes.pop("shape", SHAPE)
    return decision_key(shape, **{**base, **changes})  # type: ignore[arg-type]


def test_fast_bfloat16_is_chosen_slow_is_not() -> None:
    assert choose_mode({"float32": 3.0, "bfloat16-autocast": 1.0, "bfloat16": 0.9}, BOTH) == "bfloat16"
    assert choose_mode({"float32": 3.0, "bfloat16-autocast": 1.0, "bfloat16": 1.1}, BOTH) == "bfloat16-autocast"
    assert choose_mode({"float32": 1.0, "bfloat16-autocast": 1.7, "bfloat16": 1.6}, BOTH) == "float32"
    # Faster, but within the noise margin: not worth scores that differ from float32's.
    assert choose_mode({"float32": 1.0, "bfloat16-autocast": 0.95, "bfloat16": 0.93}, BOTH) == "float32"


def test_a_mode_outside_the_gate_is_never_chosen() -> None:
    timed = {"float32": 3.0, "bfloat16-autocast": 1.0, "bfloat16": 0.5}
    assert choose_mode(timed, {"bfloat16-autocast"}) == "bfloat16-autocast"
    assert choose_mode(timed, set()) == "float32"


def test_an_ungated_family_is_not_measured(caplog: pytest.LogCaptureFixture) -> None:
    timer = Timer(float32=3.0, bfloat16_autocast=1.0, bfloat16=1.0)
    with caplog.at_level("INFO", logger="crossrank.backends.cpu_mode"):
        decision = decide(key(), frozenset(), timer)
    assert (decision.mode, decision.source, timer.calls) == ("float32", "not gated", [])
    assert "dtype='auto' on this CPU: float32 (not gated)" in caplog.messages


def test_measured_once_then_read_from_the_cache(decisions: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    timer = Timer(float32=3.0, bfloat16_autocast=1.0, bfloat16=1.2)
    first = decide(key(), BOTH, timer)
    assert (first.mode, first.source) == ("bfloat16-autocast", "measured")
    assert first.speedups == {"float32": 1.0, "bfloat16-autocast": 3.0, "bfloat16": 2.5}
    assert timer.calls == [["float32", "bfloat16-autocast", "bfloat16"]]
    assert len(list(decisions.glob("*.json"))) == 1
    monkeypatch.setattr(cpu_mode, "_decided", {})  # a new process
    again = decide(key(), BOTH, timer)
    assert (again.mode, again.source, again.speedups) == ("bfloat16-autocast", "cached", first.speedups)
    assert len(timer.calls) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"cpu": "Intel(R) Xeon(R) Platinum 8481C"},
        {"flags": {"avx512_bf16", "amx_bf16"}},
        {"runtime": {"torch": "2.14.0"}},
        {"runtime": {"onnxruntime": "1.32.0"}},  # the ONNX backend's decision is its own
        {"threads": 8},
        {"shape": {**SHAPE, "hidden_size": 384, "intermediate_size": 1536}},
    ],
)
def test_another_cpu_torch_or_shape_decides_again(change: dict[str, object], monkeypatch: pytest.MonkeyPatch) -> None:
    timer = Timer(float32=3.0, bfloat16_autocast=1.0, bfloat16=1.2)
    decide(key(), BOTH, timer)
    monkeypatch.setattr(cpu_mode, "_decided", {})
    slow = Timer(float32=1.0, bfloat16_autocast=1.7, bfloat16=1.6)
    decision = decide(key(**change), BOTH, slow)
    assert (decision.mode, decision.source, len(slow.calls)) == ("float32", "measured", 1)


@pytest.mark.parametrize("content", ["", "{not json", '{"key": 1}', "[]", '{"mode": "float64"}'])
def test_a_corrupt_cache_file_is_measured_again(decisions: Path, content: str, monkeypatch: pytest.MonkeyPatch) -> None:
    timer = Timer(float32=3.0, bfloat16_autocast=1.0, bfloat16=1.2)
    decide(key(), BOTH, timer)
    [path] = decisions.glob("*.json")
    path.write_text(content)
    monkeypatch.setattr(cpu_mode, "_decided", {})
    assert decide(key(), BOTH, timer).source == "measured"
    assert len(timer.calls) == 2
    assert json.loads(path.read_text())["mode"] == "bfloat16-autocast"  # rewritten whole
    assert [p.name for p in decisions.iterdir()] == [path.name]  # no temporary file left behind


def test_an_unwritable_cache_folder_still_decides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setattr(cpu_mode, "decision_folder", lambda: blocker / "cpu-precision")
    timer = Timer(float32=3.0, bfloat16_autocast=1.0, bfloat16=1.2)
    assert decide(key(), BOTH, timer).mode == "bfloat16-autocast"


def test_a_busy_machine_keeps_the_decision_for_this_process_only(decisions: Path) -> None:
    timer = Timer(float32=3.0, bfloat16_autocast=1.0, bfloat16=1.2)
    decision = decide(key(), BOTH, timer, busy=True)
    assert decision.source == "measured on a busy CPU, not cached"
    assert list(decisions.iterdir()) == []
    assert decide(key(), BOTH, timer) is decision  # remembered: one measurement per process


def test_cached_decisions_and_cpu_mode_of_a_wrapped_backend() -> None:
    decision = decide(key(), BOTH, Timer(float32=3.0, bfloat16_autocast=1.0, bfloat16=1.2))
    assert [d.mode for d in cpu_mode.cached_decisions()] == ["bfloat16-autocast"]

    class Inner:
        cpu_mode: CpuModeDecision | None = decision

    class Wrapper:
        inner = Inner()

    assert cpu_mode_of(Wrapper()) == decision.as_dict()
    Inner.cpu_mode = None
    assert cpu_mode_of(Wrapper()) is None


@pytest.mark.slow
def test_override_order(english_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """dtype= and CROSSRANK_DTYPE win over the measurement; auto on CPU runs what was decided, and says so."""
    from crossrank import Reranker
    from crossrank.backends import torch as torch_backend
    from crossrank.settings import Settings

    forced = CpuModeDecision("bfloat16", {"float32": 1.0, "bfloat16": 3.0}, "measured")
    asked: list[Path] = []
    monkeypatch.setattr(torch_backend, "measured_cpu_mode", lambda folder: asked.append(folder) or forced)
    with Reranker(str(english_model_dir), device="cpu") as auto:
        assert (auto.dtype, auto.fingerprint().values["dtype"]) == ("bfloat16", "bfloat16")
        assert cpu_mode_of(auto.scorer.backend) == forced.as_dict()
    with Reranker(str(english_model_dir), device="cpu", dtype="float32") as explicit:
        assert explicit.dtype == "float32" and cpu_mode_of(explicit.scorer.backend) is None
    monkeypatch.setenv("CROSSRANK_DTYPE", "float32")
    options = Settings(model=str(english_model_dir), device="cpu").reranker_options()
    with Reranker.from_options(options) as from_env:
        assert from_env.dtype == "float32"
    assert asked == [english_model_dir]


@pytest.mark.slow  # the first call imports BERT's code and makes oneDNN's bfloat16 kernels: seconds
@pytest.mark.serial  # a time bound: alone on the machine (tests/run.py)
def test_a_real_measurement_of_a_tiny_shape_keeps_its_bound() -> None:
    import torch
    from transformers import BertConfig

    from crossrank.backends.torch import time_cpu_modes

    config = BertConfig(hidden_size=32, intermediate_size=64, num_attention_heads=4, max_position_embeddings=64)
    modes = ["float32", "bfloat16-autocast", "bfloat16"]
    threads = torch.get_num_threads()
    # One thread: on a CPU shared with other processes, two threads wait for each other at every operation.
    torch.set_num_threads(1)
    try:
        time_cpu_modes(config, list(modes), budget=0.1)
        started = time.perf_counter()
        seconds = time_cpu_modes(config, list(modes), budget=0.3)
        elapsed = time.perf_counter() - started
    finally:
        torch.set_num_threads(threads)
    assert elapsed < 1.0  # the budget, a round past it and building the layer
    assert set(seconds) <= set(modes) and "float32" in seconds
    assert all(0 < s < 0.3 for s in seconds.values())


def test_doctor_shows_what_was_measured_on_this_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from crossrank.backends.cpu import cpu_model
    from crossrank.backends.diagnostics import TorchFacts
    from crossrank.tools import environment
    from crossrank.tools.environment import check_cpu

    monkeypatch.setattr(environment, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    [before] = check_cpu(TorchFacts(cpu_capability="AVX512"))
    assert "times float32 against bfloat16 (torch) or int8 (backend='onnx') on a model's first load" in before.detail
    assert "no bfloat16 instructions" not in before.detail
    decide(key(cpu=cpu_model() or ""), BOTH, Timer(float32=3.0, bfloat16_autocast=1.0, bfloat16=1.2))
    [after] = check_cpu(TorchFacts(cpu_capability="AVX512"))
    summary = (
        "xlm-roberta 1024/4096 on torch, 2 threads: bfloat16-autocast (cached; bfloat16-autocast 3.00x, bfloat16 2.50x"
    )
    assert summary in after.detail


def test_doctor_says_torch_runs_float32_on_a_cpu_without_bfloat16_instructions(monkeypatch: pytest.MonkeyPatch) -> None:
    from crossrank.backends.diagnostics import TorchFacts
    from crossrank.tools import environment

    monkeypatch.setattr(environment, "cpu_flags", lambda: {"avx2", "fma"})
    [check] = environment.check_cpu(TorchFacts(cpu_capability="AVX2"))
    assert "dtype='auto' times float32 against int8 (backend='onnx') on a model's first load" in check.detail
    assert "torch runs float32: no bfloat16 instructions here" in check.detail


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"avx2", "fma"}, False),  # Zen 3, Skylake client: bfloat16 through float32 conversions
        ({"avx2", "avx512f", "avx512_vnni"}, False),  # Cascade Lake: VNNI is int8 only
        ({"avx2", "avx512f", "avx512_bf16"}, True),  # Zen 4, Cooper Lake
        ({"avx2", "amx_tile", "amx_bf16"}, True),  # Sapphire Rapids
        ({"avx2", "avx_vnni", "avx_ne_convert"}, True),  # AVX-VNNI-2 parts (Sierra Forest, Arrow Lake)
        ({"fp", "asimd", "bf16"}, True),  # Arm Neoverse V1/N2 (Graviton3)
        ({"fp", "asimd"}, False),  # Arm without BF16 (Graviton2)
        (set(), True),  # flags unknown: measured
    ],
)
def test_bfloat16_instructions_by_cpu_flags(flags: set[str], expected: bool) -> None:
    assert bfloat16_instructions(flags) is expected


def test_a_cpu_without_bfloat16_instructions_runs_float32_untimed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The torch modes are all bfloat16; without its instructions none is timed (seconds on a first load, for a
    mode 6-7x slower than float32 on such a CPU), and the decision says why."""
    from transformers import BertConfig

    from crossrank.backends import torch as torch_backend

    BertConfig(hidden_size=32, intermediate_size=64, num_attention_heads=4).save_pretrained(tmp_path)
    monkeypatch.setitem(cpu_mode.GATED_MODES, "bert", BOTH)
    monkeypatch.setattr(torch_backend, "time_cpu_modes", lambda config, modes: pytest.fail("timed"))
    monkeypatch.setattr(torch_backend, "cpu_flags", lambda: {"avx2", "fma"})
    decision = torch_backend.measured_cpu_mode(tmp_path)
    assert (decision.mode, decision.source, decision.speedups) == ("float32", cpu_mode.NO_BFLOAT16, {})
    timer = Timer(float32=3.0, bfloat16_autocast=1.0, bfloat16=1.2)
    monkeypatch.setattr(torch_backend, "time_cpu_modes", lambda config, modes: timer(modes))
    monkeypatch.setattr(torch_backend, "cpu_flags", lambda: {"avx2", "avx512_bf16"})
    assert torch_backend.measured_cpu_mode(tmp_path).mode == "bfloat16-autocast"
    assert timer.calls == [["float32", "bfloat16-autocast", "bfloat16"]]
    monkeypatch.setitem(cpu_mode.GATED_MODES, "bert", frozenset())
    assert torch_backend.measured_cpu_mode(tmp_path).source == "not gated"  # the gate's reason comes first
