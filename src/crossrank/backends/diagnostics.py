"""What torch says about this machine, for ``crossrank doctor``; a broken torch is reported, not raised."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["CudaDevice", "TorchFacts", "torch_facts"]


@dataclass(frozen=True, slots=True)
class CudaDevice:
    """One GPU as torch sees it (its index follows CUDA_VISIBLE_DEVICES)."""

    index: int
    name: str
    uuid: str
    total_bytes: int
    free_bytes: int
    bf16: bool
    capability: str


@dataclass(frozen=True, slots=True)
class TorchFacts:
    """torch's version and build, CUDA state, CPU kernels and threads; ``error`` when torch does not import."""

    version: str | None = None
    cuda_build: str | None = None
    cuda_available: bool = False
    cuda_error: str | None = None
    devices: list[CudaDevice] = field(default_factory=list)
    cpu_capability: str | None = None
    threads: int | None = None
    interop_threads: int | None = None
    error: str | None = None


def torch_facts() -> TorchFacts:
    """Import torch and read its facts; never raises."""
    try:
        import torch
    except Exception as exc:  # ImportError, or OSError from a missing CUDA library
        return TorchFacts(error=f"{type(exc).__name__}: {exc}")
    devices: list[CudaDevice] = []
    cuda_error = None
    try:
        available = torch.cuda.is_available()
        for index in range(torch.cuda.device_count() if available else 0):
            props = torch.cuda.get_device_properties(index)
            free, total = torch.cuda.mem_get_info(index)
            devices.append(
                CudaDevice(
                    index=index,
                    name=str(props.name),
                    uuid=str(getattr(props, "uuid", "")),
                    total_bytes=int(total),
                    free_bytes=int(free),
                    bf16=bool(torch.cuda.is_bf16_supported()),
                    capability=f"{props.major}.{props.minor}",
                )
            )
    except RuntimeError as exc:  # a driver/runtime mismatch surfaces here
        available, cuda_error = False, str(exc)
    return TorchFacts(
        version=str(torch.__version__),
        cuda_build=torch.version.cuda,
        cuda_available=available,
        cuda_error=cuda_error,
        devices=devices,
        cpu_capability=str(torch.backends.cpu.get_cpu_capability()),
        threads=torch.get_num_threads(),
        interop_threads=torch.get_num_interop_threads(),
    )
