"""GPU facts from NVML (``nvidia-ml-py``): memory per GPU and the processes holding it.

torch can say how much memory is free but not who holds the rest; NVML can, and it also works
when torch is a CPU build, so ``crossrank doctor`` reports the GPUs of a box whatever is installed.
Everything here degrades to a reason string instead of raising: no package, no driver, no GPU.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["GpuInfo", "GpuProcess", "NvmlReport", "describe_processes", "nvml_report"]


@dataclass(frozen=True, slots=True)
class GpuProcess:
    """A process with memory on a GPU (``used_bytes`` is ``None`` when the driver does not tell)."""

    pid: int
    name: str
    used_bytes: int | None


@dataclass(frozen=True, slots=True)
class GpuInfo:
    """One physical GPU as NVML sees it."""

    index: int
    uuid: str
    name: str
    total_bytes: int
    free_bytes: int
    processes: tuple[GpuProcess, ...] = ()


@dataclass(frozen=True, slots=True)
class NvmlReport:
    """What NVML reported, or why it could not (``reason``)."""

    available: bool
    reason: str | None = None
    driver_version: str | None = None
    cuda_driver_version: str | None = None  # the newest CUDA runtime this driver supports, e.g. "12.4"
    gpus: tuple[GpuInfo, ...] = field(default_factory=tuple)


def _process_name(nvml: Any, pid: int) -> str:
    try:
        name = nvml.nvmlSystemGetProcessName(pid)
        return str(name.decode() if isinstance(name, bytes) else name)
    except Exception:
        comm = Path(f"/proc/{pid}/comm")
        return comm.read_text().strip() if comm.is_file() else "?"


def _processes(nvml: Any, handle: Any) -> tuple[GpuProcess, ...]:
    seen: dict[int, GpuProcess] = {}
    for query in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
        try:
            running = getattr(nvml, query)(handle)
        except Exception:
            continue
        for proc in running:
            used = getattr(proc, "usedGpuMemory", None)
            seen[int(proc.pid)] = GpuProcess(int(proc.pid), _process_name(nvml, int(proc.pid)), used)
    return tuple(sorted(seen.values(), key=lambda p: -(p.used_bytes or 0)))


def nvml_report() -> NvmlReport:
    """Driver and CUDA versions, and each GPU's memory and processes; never raises."""
    try:
        import pynvml as nvml
    except ImportError:
        return NvmlReport(False, "nvidia-ml-py is not installed: pip install 'crossrank[gpu]'")
    try:
        nvml.nvmlInit()
    except Exception as exc:
        return NvmlReport(False, f"no NVIDIA driver reachable ({exc})")
    try:
        driver = nvml.nvmlSystemGetDriverVersion()
        cuda = int(nvml.nvmlSystemGetCudaDriverVersion_v2())
        gpus = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            name = nvml.nvmlDeviceGetName(handle)
            uuid = nvml.nvmlDeviceGetUUID(handle)
            gpus.append(
                GpuInfo(
                    index=index,
                    uuid=str(uuid.decode() if isinstance(uuid, bytes) else uuid),
                    name=str(name.decode() if isinstance(name, bytes) else name),
                    total_bytes=int(memory.total),
                    free_bytes=int(memory.free),
                    processes=_processes(nvml, handle),
                )
            )
        return NvmlReport(
            True,
            driver_version=str(driver.decode() if isinstance(driver, bytes) else driver),
            cuda_driver_version=f"{cuda // 1000}.{cuda % 1000 // 10}",
            gpus=tuple(gpus),
        )
    except Exception as exc:
        return NvmlReport(False, f"NVML failed: {exc}")
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()


def describe_processes(processes: tuple[GpuProcess, ...], *, exclude_pid: int | None = None) -> str:
    """``pid 123 (python) 30.0 GiB, pid 456 (?)`` for an error message; ``none`` when empty."""
    shown = [
        f"pid {p.pid} ({p.name})" + (f" {p.used_bytes / 2**30:.1f} GiB" if p.used_bytes is not None else "")
        for p in processes
        if p.pid != exclude_pid
    ]
    return ", ".join(shown) or "no other process"
