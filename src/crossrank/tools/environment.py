"""Doctor checks of the Python environment and the machine: versions, conflicts, CPU, threads, GPUs, disk.

Each function returns ``Check`` findings with the fix; none raises. Environment variables come in as
a mapping from the door (the CLI), so nothing here reads ``os.environ``.
"""

from __future__ import annotations

import os
import platform
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

from crossrank.backends.cpu import bfloat16_instructions, cpu_flags, cpu_model, int8_needs_7bit_weights
from crossrank.backends.cpu_mode import cached_decisions
from crossrank.backends.diagnostics import TorchFacts
from crossrank.backends.gpu import NvmlReport, describe_processes
from crossrank.models.verify import Check

__all__ = [
    "HUB_TIMEOUT",
    "check_conflicts",
    "check_cpu",
    "check_cuda",
    "check_disk",
    "check_gpus",
    "check_hub",
    "check_packages",
    "check_python",
    "check_threads",
    "installed",
    "probe_hub",
]

# The stack crossrank runs on, and the oldest release of each that works with it (pyproject.toml's floors).
_MINIMUM = {
    "torch": "2.5",
    "transformers": "5.0",
    "tokenizers": "0.21",
    "huggingface_hub": "1.23",
    "safetensors": "0.4.3",
}
# Packages whose declared pins on each other we check, like `pip check` for this stack only.
_PINNED = ("transformers", "sentence-transformers", "tokenizers", "huggingface_hub", "FlagEmbedding")
_GIB = 2**30
# Seconds the doctor waits for the hub to answer before calling it unreachable.
HUB_TIMEOUT = 3.0


def installed(name: str) -> str | None:
    """The installed version of distribution ``name``, or ``None``."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _older(version: str, than: str) -> bool:
    try:
        return Version(version).release < Version(than).release
    except InvalidVersion:
        return False


def check_python() -> list[Check]:
    version = platform.python_version()
    if _older(version, "3.10"):
        return [Check("python", "fail", f"Python {version}", "crossrank needs Python 3.10 or newer")]
    return [Check("python", "ok", f"Python {version} ({platform.python_implementation()})")]


def _broken_pins() -> list[str]:
    problems = []
    for name in _PINNED:
        try:
            requirements = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for line in requirements:
            try:
                req = Requirement(line)
            except InvalidRequirement:
                continue
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            have = installed(req.name)
            if have is not None and req.specifier and not req.specifier.contains(have, prereleases=True):
                problems.append(f"{name} {installed(name)} needs {req.name}{req.specifier} but {have} is installed")
    return problems


def check_packages(crossrank_version: str) -> list[Check]:
    """Versions of the stack, releases too old for crossrank, and pins the installed packages break."""
    checks = []
    versions = {name: installed(name) for name in _MINIMUM}
    listed = ", ".join(f"{name} {v or 'MISSING'}" for name, v in versions.items())
    missing = [name for name, v in versions.items() if v is None]
    old = [f"{name} {v} (needs >= {_MINIMUM[name]})" for name, v in versions.items() if v and _older(v, _MINIMUM[name])]
    if missing or old:
        problem = ", ".join([*(f"{m} is not installed" for m in missing), *old])
        wanted = " ".join(f"'{name}>={version}'" for name, version in _MINIMUM.items())
        fix = f"pip install {wanted} (see the README's install line)"
        checks.append(Check("packages", "fail", f"crossrank {crossrank_version}: {problem}", fix))
    else:
        checks.append(Check("packages", "ok", f"crossrank {crossrank_version}, {listed}"))
    numpy, torch = installed("numpy"), versions["torch"]
    if numpy and torch and not _older(numpy, "2") and _older(torch, "2.3"):
        checks.append(
            Check(
                "numpy",
                "fail",
                f"numpy {numpy} with torch {torch}: torch older than 2.3 was built against numpy 1",
                "pip install 'numpy<2', or upgrade torch",
            )
        )
    pins = _broken_pins()
    if pins:
        checks.append(
            Check(
                "pins", "fail", "; ".join(pins), "install versions that agree: pip install -U the first package named"
            )
        )
    return checks


def check_conflicts(environ: Mapping[str, str]) -> list[Check]:
    """Installs known to break this stack: Keras 3 beside TensorFlow, TensorFlow taking the GPU, two ONNX runtimes."""
    checks = []
    tensorflow = installed("tensorflow") or installed("tensorflow-cpu")
    keras, tf_keras, transformers = installed("keras"), installed("tf-keras"), installed("transformers")
    if tensorflow and keras and not _older(keras, "3"):
        if _older(tensorflow, "2.16"):
            checks.append(
                Check(
                    "keras",
                    "fail",
                    f"keras {keras} is installed next to TensorFlow {tensorflow}, which needs Keras 2",
                    "pip install 'keras<3' (or upgrade TensorFlow to 2.16+)",
                )
            )
        elif not tf_keras and transformers and _older(transformers, "5"):
            checks.append(
                Check(
                    "keras",
                    "fail",
                    f"keras {keras} with TensorFlow {tensorflow}: transformers {transformers} refuses Keras 3 "
                    "when it imports TensorFlow",
                    "pip install tf-keras, or set USE_TF=0, or uninstall tensorflow",
                )
            )
    if tensorflow:
        tamed = environ.get("USE_TF", "").upper() in {"0", "FALSE", "NO"} or (
            environ.get("TF_FORCE_GPU_ALLOW_GROWTH", "").lower() == "true"
        )
        checks.append(
            Check(
                "tensorflow",
                "ok" if tamed else "warn",
                f"TensorFlow {tensorflow} is installed"
                + (
                    ""
                    if tamed
                    else ": imported in the same process it reserves nearly all GPU memory, leaving none for torch"
                ),
                None if tamed else "set USE_TF=0 and TF_FORCE_GPU_ALLOW_GROWTH=true, or uninstall tensorflow",
            )
        )
    if installed("onnxruntime") and installed("onnxruntime-gpu"):
        checks.append(
            Check(
                "onnxruntime",
                "warn",
                "both onnxruntime and onnxruntime-gpu are installed; they overwrite each other's files",
                "pip uninstall onnxruntime onnxruntime-gpu, then install only the one you need",
            )
        )
    if not checks:
        checks.append(Check("conflicts", "ok", "no TensorFlow/Keras or duplicate ONNX runtime installs"))
    return checks


def check_cuda(facts: TorchFacts, nvml: NvmlReport) -> list[Check]:
    """Can torch use the GPUs this machine has? Names the mismatch between torch's CUDA and the driver."""
    if facts.error:
        return [Check("torch", "fail", f"torch does not import: {facts.error}", "pip install torch==2.13.0")]
    gpus = len(nvml.gpus)
    driver = f"driver {nvml.driver_version} (CUDA up to {nvml.cuda_driver_version})" if nvml.available else None
    if facts.cuda_available:
        names = ", ".join(f"cuda:{d.index} {d.name}" for d in facts.devices)
        return [Check("cuda", "ok", f"torch {facts.version} CUDA {facts.cuda_build}, {driver or 'driver ?'}: {names}")]
    if facts.cuda_build and gpus:
        newer = nvml.cuda_driver_version and _older(nvml.cuda_driver_version, facts.cuda_build)
        reason = (
            f"torch is built for CUDA {facts.cuda_build} but the {driver}"
            if newer
            else (facts.cuda_error or f"CUDA is not usable ({driver})")
        )
        return [
            Check(
                "cuda",
                "fail",
                f"{gpus} NVIDIA GPU(s) present but torch {facts.version} cannot use them: {reason}",
                f"update the NVIDIA driver, or install a torch built for CUDA {nvml.cuda_driver_version}",
            )
        ]
    if gpus:
        return [
            Check(
                "cuda",
                "warn",
                f"torch {facts.version} is a CPU-only build but this machine has {gpus} NVIDIA GPU(s)",
                "install a CUDA build of torch (pytorch.org/get-started) to score on the GPU",
            )
        ]
    why = nvml.reason or "no NVIDIA GPU"
    return [
        Check(
            "cuda",
            "warn",
            f"no GPU: torch {facts.version} (CUDA build: {facts.cuda_build or 'none'}); {why}. Scoring runs on CPU, "
            "several times slower for large rerankers",
            "run on a machine with an NVIDIA GPU for large rerankers (bge-reranker-v2-m3), or keep CPU for small ones",
        )
    ]


def check_gpus(nvml: NvmlReport, need_bytes: int | None, dtype: str) -> list[Check]:
    """Each GPU's memory, the processes on it, and whether the model fits in what is free."""
    checks = []
    for gpu in nvml.gpus:
        holders = describe_processes(gpu.processes, exclude_pid=os.getpid())
        detail = (
            f"GPU {gpu.index} {gpu.name}: {gpu.free_bytes / _GIB:.1f} of {gpu.total_bytes / _GIB:.1f} GiB free; "
            f"processes: {holders}"
        )
        if need_bytes is None:
            checks.append(Check(f"gpu{gpu.index}", "ok", detail))
        elif gpu.free_bytes >= need_bytes:
            checks.append(Check(f"gpu{gpu.index}", "ok", f"{detail}; the model fits at {dtype}"))
        else:
            checks.append(
                Check(
                    f"gpu{gpu.index}",
                    "warn",
                    f"{detail}; the model needs about {need_bytes / _GIB:.1f} GiB at {dtype}",
                    "stop the processes above, or use another GPU (CUDA_VISIBLE_DEVICES) or the CPU",
                )
            )
    return checks


def check_cpu(facts: TorchFacts) -> list[Check]:
    """SIMD features the CPU kernels use: AVX2, AVX-512, VNNI, AMX (x86) from /proc/cpuinfo."""
    flags = cpu_flags()
    names = {
        "avx2": "AVX2",
        "avx512f": "AVX-512",
        "avx512_vnni": "AVX-512-VNNI",
        "avx_vnni": "AVX-VNNI",
        "avx512_bf16": "AVX-512-BF16",
        "amx_tile": "AMX",
        "amx_bf16": "AMX-BF16",
        "amx_int8": "AMX-INT8",
    }
    present = [label for flag, label in names.items() if flag in flags]
    kernels = f"torch CPU kernels: {facts.cpu_capability}" if facts.cpu_capability else "torch CPU kernels unknown"
    machine = platform.machine()
    if machine in {"x86_64", "AMD64"} and flags and "avx2" not in flags:
        return [Check("cpu", "warn", f"{machine} without AVX2; {kernels}", "expect slow CPU scoring; use a GPU")]
    # Whether bfloat16 pays off is measured per model shape (flags cannot tell): show what was measured here.
    decided = [d for d in cached_decisions() if d.key.get("cpu") == cpu_model()]
    bfloat16 = bfloat16_instructions(flags)
    if decided:
        modes = "; ".join(
            f"{d.model()} on {d.runtime()}, {d.key.get('threads')} threads: {d.summary()}" for d in decided
        )
        auto = f"dtype='auto' measured on this CPU: {modes}"
    else:
        reduced = "bfloat16 (torch) or int8 (backend='onnx')" if bfloat16 else "int8 (backend='onnx')"
        auto = f"dtype='auto' times float32 against {reduced} on a model's first load here and keeps the fastest"
        if "amx_bf16" in flags:
            auto += " (bfloat16 autocast on this AMX CPU: 3-10x float32 on m3-shape elsewhere)"
    if not bfloat16:
        auto += "; torch runs float32: no bfloat16 instructions here (AVX-512-BF16, AMX-BF16, AVX-NE-CONVERT, Arm BF16)"
    weights = "7-bit weights, no VNNI" if int8_needs_7bit_weights(flags, machine) else "8-bit weights"
    int8 = f"int8 runs with backend='onnx' (dtype='auto' measures it, quantize='int8' forces it; {weights})"
    present_text = ", ".join(present) or "no x86 SIMD flags"
    return [Check("cpu", "ok", f"{machine} {os.cpu_count()} cores, {present_text}; {kernels}; {auto}; {int8}")]


def _usable_cores() -> float:
    cores: float = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else float(os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cores = min(cores, int(quota) / int(period))
    except (OSError, ValueError):
        pass
    return cores


def check_threads(facts: TorchFacts, environ: Mapping[str, str], configured: int | None) -> list[Check]:
    """torch's thread count against the cores this process may use (affinity and cgroup quota)."""
    cores = _usable_cores()
    threads = configured or facts.threads
    omp = environ.get("OMP_NUM_THREADS")
    detail = f"torch threads {threads} (interop {facts.interop_threads}), usable cores {cores:g}, OMP_NUM_THREADS={omp}"
    if threads is not None and threads > max(cores, 1) + 0.5:
        return [
            Check(
                "threads",
                "warn",
                f"{detail}: more threads than cores makes CPU scoring slower",
                f"set CROSSRANK_NUM_THREADS={max(int(cores), 1)} (or OMP_NUM_THREADS)",
            )
        ]
    return [Check("threads", "ok", detail)]


def probe_hub(endpoint: str, timeout: float = HUB_TIMEOUT) -> str | None:
    """Ask ``endpoint`` for its front page within ``timeout`` seconds: None when it answers (any HTTP status, even
    an error page, means it is reachable), else why it could not be reached. Proxies come from the usual variables."""
    request = urllib.request.Request(endpoint, method="HEAD", headers={"User-Agent": "crossrank-doctor"})
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None
    except urllib.error.URLError as exc:
        return str(exc.reason)
    except (OSError, ValueError) as exc:  # timeouts, refused connections, a malformed HF_ENDPOINT
        return str(exc) or type(exc).__name__


def check_hub(endpoint: str, offline: bool, probe: Callable[[str], str | None] | None) -> list[Check]:
    """Whether the hub can be reached, as found by ``probe`` (``None``: not checked, and said so)."""
    if offline:
        return [Check("hub", "ok", f"offline (HF_HUB_OFFLINE): {endpoint} not contacted; only cached models load")]
    if probe is None:
        return [Check("hub", "ok", f"{endpoint}: reachability not checked")]
    started = time.perf_counter()
    problem = probe(endpoint)
    if problem is None:
        return [Check("hub", "ok", f"{endpoint} reachable ({1000 * (time.perf_counter() - started):.0f} ms)")]
    return [
        Check(
            "hub",
            "warn",
            f"{endpoint} cannot be reached ({problem}): downloads fail; models already in the cache still load",
            "check the network or proxy (HTTPS_PROXY), or set HF_ENDPOINT to a reachable mirror; on a machine that "
            "never reaches the hub, download elsewhere and set HF_HUB_OFFLINE=1",
        )
    ]


def check_disk(cache_dir: Path) -> list[Check]:
    """Where models are cached and how much room is left there."""
    probe = cache_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    detail = f"hub cache {cache_dir}, {free / _GIB:.1f} GiB free"
    if free < 3 * _GIB:
        return [
            Check("disk", "fail", detail, "free disk space or point HF_HOME at a larger disk (bge-m3 needs 2.3 GB)")
        ]
    if free < 10 * _GIB:
        return [Check("disk", "warn", detail, "keep 10 GiB free for model downloads, or move HF_HOME")]
    return [Check("disk", "ok", detail)]
