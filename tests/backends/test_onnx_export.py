"""The ONNX export's memory check and its child processes: enough memory proceeds, too little is a typed
error naming both numbers before anything is exported, and a step that dies is a clear error, not a hang.

The memory reading is injected; the steps that die are stand-in commands, so these tests run no export.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed: pip install -e '.[onnx]'")

from crossrank import BackendError, Reranker
from crossrank.backends import onnx_export
from crossrank.backends.placement import count_parameters
from crossrank.errors import ExportMemoryError, IntegrityError

GB = 10**9


@pytest.fixture
def model_dir(tmp_path: Path, fake_model_dir: Path) -> Path:
    """A copy of a tiny model folder written without torch: the export's folder is made beside it."""
    return Path(shutil.copytree(fake_model_dir, tmp_path / "tiny"))


def test_the_need_is_two_and_a_half_times_the_float32_weights_and_a_process(model_dir: Path) -> None:
    weights = 4 * count_parameters(model_dir)
    assert weights > 1_000_000  # the tiny model's embeddings (250k x 32 floats)
    assert onnx_export.export_memory_needed(model_dir) == int(2.5 * weights) + 2**30


def test_enough_memory_proceeds(model_dir: Path) -> None:
    needed = onnx_export.export_memory_needed(model_dir)
    onnx_export.check_export_memory(model_dir, needed)
    onnx_export.check_export_memory(model_dir, None)  # unknown (not Linux): not checked


def test_too_little_memory_is_a_typed_error_naming_both_numbers(model_dir: Path) -> None:
    needed = onnx_export.export_memory_needed(model_dir)
    with pytest.raises(ExportMemoryError) as caught:
        onnx_export.check_export_memory(model_dir, needed - 1)
    assert (caught.value.needed, caught.value.available) == (needed, needed - 1)
    assert isinstance(caught.value, BackendError)


@pytest.mark.slow  # loading the tokenizer imports transformers
def test_a_small_box_is_told_before_the_export_starts(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_step(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("an export step ran")

    monkeypatch.setattr(onnx_export, "export_memory_needed", lambda _model_dir: 7 * GB)
    monkeypatch.setattr("crossrank.backends.onnx.available_memory", lambda: 3 * GB)
    monkeypatch.setattr(onnx_export.ExportSteps, "run", no_step)
    with pytest.raises(ExportMemoryError) as caught:
        Reranker(str(model_dir), device="cpu", backend="onnx", quantize="int8")
    text = str(caught.value)
    assert "needs about 7.0 GB of free memory; 3.0 GB is available" in text
    assert "make the export on a machine with more" in text and "backend='torch'" in text
    assert not any((model_dir / ".crossrank").iterdir())  # nothing half-made left behind


def test_the_available_memory_is_read_on_linux() -> None:
    if not Path("/proc/meminfo").is_file():
        pytest.skip("needs /proc/meminfo (Linux)")
    total = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal:"))
    available = onnx_export.available_memory()
    assert available is not None and 0 < available < int(total.split()[1]) * 1024


def _one_step(work: Path, step: str, **args: object) -> object:
    """``step`` run in a child process of its own, as a large model's export runs each."""
    with onnx_export.ExportSteps(work, separate=True) as steps:
        return steps.run(step, **args)


def _stand_in(monkeypatch: pytest.MonkeyPatch, code: str) -> None:
    """Run ``code`` in place of every export step."""
    monkeypatch.setattr(onnx_export, "_worker_command", lambda: [sys.executable, "-c", code])


def test_a_step_killed_for_memory_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _stand_in(monkeypatch, "import os, signal; print('loading 2.3 GB', flush=True); os.kill(os.getpid(), 9)")
    with pytest.raises(BackendError) as caught:
        _one_step(tmp_path, "export", model_dir="m", target="t", allow_pickle=False, trust_remote_code=False)
    text = str(caught.value)
    assert "the ONNX export's export step was killed by signal SIGKILL" in text
    assert "out-of-memory killer" in text
    assert "loading 2.3 GB" in text  # the end of its output
    assert "backend='torch'" in text


def test_a_step_that_exits_without_an_answer_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _stand_in(monkeypatch, "import sys; sys.exit('Segmentation fault in libonnxruntime')")
    with pytest.raises(BackendError, match="quantize step exited with status 1 without an answer") as caught:
        _one_step(tmp_path, "quantize", source="s", target="t", external=False, seven_bit=False)
    assert "Segmentation fault in libonnxruntime" in str(caught.value)


@pytest.mark.slow  # the step imports onnx
def test_a_step_s_os_error_comes_back_as_one(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="No such file"):
        _one_step(tmp_path, "save", source=str(tmp_path / "absent.onnx"), target="t", external=False)


@pytest.mark.slow  # the step imports torch and transformers
def test_a_step_s_errors_come_back_typed(tmp_path: Path) -> None:
    with pytest.raises(IntegrityError, match="could not load the weights") as caught:
        _one_step(
            tmp_path,
            "export",
            model_dir=str(tmp_path),
            target=str(tmp_path / "x.onnx"),
            allow_pickle=False,
            trust_remote_code=False,
        )
    assert caught.value.fix is not None and "download the model again" in caught.value.fix


# A stand-in child that speaks ExportSteps' protocol and answers each step with its process id.
_ECHO_PID = (
    "import json, os, sys\n"
    "ready = os.fdopen(int(sys.argv[1]), 'wb', buffering=0)\n"
    "for line in sys.stdin:\n"
    "    request = json.loads(open(line.strip()).read())\n"
    "    open(request['answer'], 'w').write(json.dumps({'result': os.getpid()}))\n"
    "    ready.write(b'x')\n"
)


@pytest.mark.parametrize("separate", [False, True])
def test_steps_share_one_process_unless_separate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, separate: bool
) -> None:
    _stand_in(monkeypatch, _ECHO_PID)
    with onnx_export.ExportSteps(tmp_path, separate=separate) as steps:
        pids = [steps.run("save", source="s", target="t", external=False) for _ in range(3)]
    assert len(set(pids)) == (3 if separate else 1)


def test_a_small_model_s_steps_share_a_process_and_a_large_one_s_do_not(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not onnx_export.export_steps(tmp_path, model_dir)._separate  # tiny weights: one process
    monkeypatch.setattr(onnx_export, "count_parameters", lambda _model_dir: 568_000_000)  # bge-reranker-v2-m3
    assert onnx_export.export_steps(tmp_path, model_dir)._separate
