"""`crossrank doctor`: the real command on this GPU-less machine (JSON validated), and its checks on fake facts."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import jsonschema
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from crossrank.backends.diagnostics import CudaDevice, TorchFacts
from crossrank.backends.gpu import GpuInfo, GpuProcess, NvmlReport
from crossrank.models.verify import Check
from crossrank.tools import doctor, environment
from crossrank.tools.environment import check_conflicts, check_cuda, check_gpus, check_hub, check_threads, probe_hub

# Children import this checkout's crossrank, whatever checkout is installed.
CHILD_PYTHONPATH = os.pathsep.join([str(Path(__file__).resolve().parents[2] / "src"), os.environ.get("PYTHONPATH", "")])
CHECK = {
    "type": "object",
    "required": ["name", "status", "detail", "fix", "error"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "status": {"enum": ["ok", "warn", "fail"]},
        "detail": {"type": "string", "minLength": 1},
        "fix": {"type": ["string", "null"]},
        "error": {"type": ["string", "null"]},
    },
    # A finding that is not ok always says what to do.
    "if": {"properties": {"status": {"enum": ["warn", "fail"]}}},
    "then": {"properties": {"fix": {"type": "string", "minLength": 1}}},
}
SCHEMA = {
    "type": "object",
    "required": ["status", "exit_code", "checks", "facts"],
    "properties": {
        "status": {"enum": ["ok", "warn", "fail"]},
        "exit_code": {"enum": [0, 1, 2]},
        "checks": {"type": "array", "minItems": 8, "items": CHECK},
        "facts": {
            "type": "object",
            "required": ["torch", "nvml", "hub", "model"],
            "properties": {
                "nvml": {
                    "type": "object",
                    "required": ["available", "reason", "gpus"],
                    "properties": {"available": {"type": "boolean"}, "gpus": {"type": "array"}},
                },
                "torch": {"type": "object", "required": ["version", "cuda_build", "cuda_available"]},
            },
        },
    },
}
GIB = 2**30


def _doctor(*args: str, home: Path) -> tuple[int, str, str]:
    # float32 as the other children run (conftest.subprocess_env): dtype="auto" would time the CPU's modes and
    # cache its decision in the real ~/.cache.
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "PYTHONPATH": CHILD_PYTHONPATH}
    env["CROSSRANK_DTYPE"] = "float32"
    done = subprocess.run(
        [sys.executable, "-m", "crossrank", "doctor", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return done.returncode, done.stdout, done.stderr


@pytest.mark.slow
def test_doctor_json_on_this_machine(english_model_dir: Path, tmp_path: Path) -> None:
    code, out, err = _doctor("--model", str(english_model_dir), "--device", "cpu", "--json", home=tmp_path)
    report = json.loads(out)
    jsonschema.validate(report, SCHEMA)
    checks = {c["name"]: c for c in report["checks"]}
    assert code == report["exit_code"], err
    statuses = [c["status"] for c in report["checks"]]
    worst = "fail" if "fail" in statuses else "warn" if "warn" in statuses else "ok"
    assert report["status"] == worst
    # No GPU here: said plainly, as a warning with a fix, and NVML says why it has nothing.
    if not report["facts"]["torch"]["cuda_available"]:
        assert checks["cuda"]["status"] == "warn"
        assert checks["cuda"]["detail"].startswith("no GPU")
        assert report["facts"]["nvml"]["gpus"] == []
        assert report["facts"]["nvml"]["reason"]
    assert report["facts"]["hub"]["offline"] is True
    assert checks["hub"]["detail"].startswith("offline (HF_HUB_OFFLINE)")
    assert checks["model format"]["status"] == "ok"
    assert checks["model tokenizer"]["status"] == "ok"
    assert checks["smoke"]["status"] == "ok"
    assert "2 pairs in" in checks["smoke"]["detail"]


@pytest.mark.slow
def test_doctor_fails_on_a_truncated_model_and_skips_the_smoke_test(english_model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(english_model_dir, broken, ignore=shutil.ignore_patterns("model.safetensors"))
    (broken / "model.safetensors").write_bytes((english_model_dir / "model.safetensors").read_bytes()[:1_000_000])
    code, out, _ = _doctor("--model", str(broken), "--json", home=tmp_path)
    report = json.loads(out)
    jsonschema.validate(report, SCHEMA)
    assert code == 2
    assert report["status"] == "fail"
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["model format"]["error"] == "IncompleteModelError"
    assert "truncated" in checks["model format"]["detail"]
    assert "smoke" not in checks


def test_doctor_table_for_a_model_not_downloaded(tmp_path: Path) -> None:
    code, out, _ = _doctor("--model", "org/not-downloaded", home=tmp_path)
    assert code == 2  # a failure: every command that uses this model fails (the hub is offline here)
    assert "org/not-downloaded is not in the hub cache" in out
    assert "model: fix: crossrank download org/not-downloaded\n" in out


def test_cuda_build_newer_than_the_driver_is_named() -> None:
    facts = TorchFacts(version="2.13.0+cu128", cuda_build="12.8", cuda_available=False)
    nvml = NvmlReport(
        True,
        driver_version="535.1",
        cuda_driver_version="12.2",
        gpus=(GpuInfo(0, "GPU-1", "H100", 80 * GIB, 79 * GIB),),
    )
    (check,) = check_cuda(facts, nvml)
    assert check.status == "fail"
    assert "torch is built for CUDA 12.8 but the driver 535.1 (CUDA up to 12.2)" in check.detail
    assert check.fix == "update the NVIDIA driver, or install a torch built for CUDA 12.2"


def test_cpu_torch_on_a_gpu_machine_and_a_working_gpu() -> None:
    nvml = NvmlReport(
        True, driver_version="550", cuda_driver_version="12.4", gpus=(GpuInfo(0, "GPU-1", "L4", 24 * GIB, 20 * GIB),)
    )
    (cpu_build,) = check_cuda(TorchFacts(version="2.13.0+cpu"), nvml)
    assert cpu_build.status == "warn"
    assert "CPU-only build but this machine has 1 NVIDIA GPU(s)" in cpu_build.detail
    device = CudaDevice(0, "L4", "u", 24 * GIB, 20 * GIB, True, "8.9")
    (working,) = check_cuda(
        TorchFacts(version="2.13.0", cuda_build="12.4", cuda_available=True, devices=[device]), nvml
    )
    assert working.status == "ok"
    assert "cuda:0 L4" in working.detail


def test_gpu_memory_held_by_other_processes() -> None:
    held = (GpuProcess(11, "vllm", 70 * GIB), GpuProcess(12, "jupyter", 8 * GIB))
    nvml = NvmlReport(True, gpus=(GpuInfo(0, "GPU-1", "H100", 80 * GIB, 1 * GIB, held),))
    (gpu,) = check_gpus(nvml, need_bytes=3 * GIB, dtype="float16")
    assert gpu.status == "warn"
    assert "pid 11 (vllm) 70.0 GiB, pid 12 (jupyter) 8.0 GiB" in gpu.detail
    assert "needs about 3.0 GiB at float16" in gpu.detail
    (roomy,) = check_gpus(NvmlReport(True, gpus=(GpuInfo(0, "GPU-1", "H100", 80 * GIB, 60 * GIB),)), 3 * GIB, "float16")
    assert roomy.status == "ok"


def test_more_threads_than_cores() -> None:
    (check,) = check_threads(TorchFacts(threads=2, interop_threads=2), {"OMP_NUM_THREADS": "512"}, configured=512)
    assert check.status == "warn"
    assert "OMP_NUM_THREADS=512" in check.detail
    assert check.fix is not None
    assert check.fix.startswith("set CROSSRANK_NUM_THREADS=")


def test_fake_install_with_a_huggingface_hub_too_old_for_crossrank(monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub 1.21 (what optimum-intel 2.2 pins below 1.22) lacks the cached-listing call `verify` uses."""
    versions = {"torch": "2.13.0", "transformers": "5.5.4", "tokenizers": "0.22.1", "huggingface_hub": "1.21.0"}
    monkeypatch.setattr(environment, "installed", {**versions, "safetensors": "0.6.2"}.get)
    check = next(c for c in environment.check_packages("0.1.0") if c.name == "packages")
    assert check.status == "fail"
    assert "huggingface_hub 1.21.0 (needs >= 1.23)" in check.detail
    assert check.fix is not None and "'huggingface_hub>=1.23'" in check.fix


def test_doctor_floors_are_the_packages_own() -> None:
    floors = {}
    for line in metadata.requires("crossrank") or []:
        requirement = Requirement(line)
        if requirement.marker is None:  # not an extra's
            (spec,) = requirement.specifier
            floors[canonicalize_name(requirement.name)] = spec.version
    assert {name: floors[canonicalize_name(name)] for name in environment._MINIMUM} == environment._MINIMUM


def test_fake_installs_keras3_next_to_tensorflow(monkeypatch: pytest.MonkeyPatch) -> None:
    versions = {"tensorflow": "2.15.0", "keras": "3.3.3", "transformers": "4.44.0"}
    monkeypatch.setattr(environment, "installed", versions.get)
    checks = {c.name: c for c in check_conflicts({})}
    assert checks["keras"].status == "fail"
    assert "keras 3.3.3 is installed next to TensorFlow 2.15.0, which needs Keras 2" in checks["keras"].detail
    assert checks["tensorflow"].status == "warn"
    assert "reserves nearly all GPU memory" in checks["tensorflow"].detail
    versions["tensorflow"] = "2.16.1"
    checks = {c.name: c for c in check_conflicts({"USE_TF": "0"})}
    assert checks["keras"].fix == "pip install tf-keras, or set USE_TF=0, or uninstall tensorflow"
    assert checks["tensorflow"].status == "ok"
    versions["tf-keras"] = "2.16.0"
    assert "keras" not in {c.name for c in check_conflicts({})}


@pytest.mark.parametrize(
    ("flags", "hint"),
    [
        ({"avx2", "avx512f", "amx_tile", "amx_bf16"}, "bfloat16 autocast on this AMX CPU"),
        ({"avx2"}, "quantize='int8' forces it; 7-bit weights, no VNNI)"),
        # AVX-512-BF16 without AMX measured slower in bfloat16 than in float32 (BENCHMARKS.md).
        ({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}, "quantize='int8' forces it; 8-bit weights)"),
    ],
)
def test_cpu_check_names_the_fastest_mode_for_these_flags(
    monkeypatch: pytest.MonkeyPatch, flags: set[str], hint: str
) -> None:
    monkeypatch.setattr(environment, "cpu_flags", lambda: flags)  # another CPU than this one
    monkeypatch.setattr(environment.platform, "machine", lambda: "x86_64")
    [check] = environment.check_cpu(TorchFacts(cpu_capability="AVX2"))
    assert hint in check.detail


@pytest.fixture(scope="module")
def local_hub() -> Iterator[str]:
    """A loopback HTTP server standing in for the hub (it answers every request with 404)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    server.RequestHandlerClass.log_message = lambda *args: None  # type: ignore[method-assign]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/no-such-page"
    server.shutdown()
    server.server_close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_hub_is_called_reachable_only_when_it_answers(local_hub: str) -> None:
    [up] = check_hub(local_hub, False, probe_hub)
    assert (up.status, up.fix) == ("ok", None)
    assert "reachable" in up.detail
    down = f"http://127.0.0.1:{_closed_port()}"
    [check] = check_hub(down, False, probe_hub)
    assert check.status == "warn" and f"{down} cannot be reached" in check.detail
    assert check.fix is not None and "HF_HUB_OFFLINE=1" in check.fix
    [unasked] = check_hub(down, False, None)
    assert unasked.detail.endswith("reachability not checked") and "online" not in unasked.detail
    [offline] = check_hub(down, True, probe_hub)
    assert offline.detail.startswith("offline (HF_HUB_OFFLINE)")


def test_the_hub_probe_gives_up_after_its_timeout() -> None:
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        started = time.perf_counter()
        problem = probe_hub(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=0.3)
    assert problem is not None and time.perf_counter() - started < 5


@pytest.mark.parametrize("reachable", [True, False, None])
def test_a_model_not_downloaded_is_a_failure_with_the_download_command(tmp_path: Path, reachable: bool | None) -> None:
    folder, check = doctor._model_folder("org/not-downloaded", None, str(tmp_path), reachable)
    assert folder is None and check is not None
    assert check.status == "fail"
    assert check.fix == "crossrank download org/not-downloaded"
    assert ("cannot be reached" in check.detail) == (reachable is False)


@pytest.mark.parametrize("name", ["docs.txt", "data/docs.jsonl", "./models/x", "/no/such/folder", "a/b/c", "x/../y"])
def test_names_that_are_not_hub_ids_get_no_download_suggestion(tmp_path: Path, name: str) -> None:
    folder, check = doctor._model_folder(name, None, str(tmp_path), True)
    assert folder is None and check is not None
    assert check.status == "fail"
    assert check.fix is not None and "crossrank download" not in check.fix
    assert check.detail.startswith("no model folder at")


def test_a_file_given_as_the_model_is_named_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("docs.txt").write_text("not a model")
    _, check = doctor._model_folder("docs.txt", None, str(tmp_path), True)
    assert check is not None and check.status == "fail"
    assert check.detail == f"{tmp_path / 'docs.txt'} is a file, not a model folder"


def test_doctor_prints_every_fix_in_full_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from crossrank.cli._render import print_doctor

    deep = "/srv/" + "/".join(f"folder-{i:02d}" for i in range(20)) + "/model"
    fix = f"free disk space or point HF_HOME at a larger disk: export HF_HOME={deep}"
    report = doctor.DoctorReport([Check("disk", "fail", f"hub cache {deep}, 0.1 GiB free", fix), Check("a", "ok", "b")])
    print_doctor(report)
    out = capsys.readouterr().out
    assert f"  disk: fix: {fix}\n" in out
    assert "…" not in out
    assert deep.replace("/", "") in "".join(ch for ch in out if ch not in "/│ \n")  # the finding is folded, not cut
