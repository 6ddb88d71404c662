"""Where a model runs when ``device="auto"``: the GPU with the most free memory if the model fits, else CPU.

Pure arithmetic over numbers the torch backend measures, so the decision is tested without a GPU.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DTYPE_BYTES",
    "GpuMemory",
    "Placement",
    "choose_placement",
    "count_parameters",
    "needed_bytes",
    "stored_dtype",
]

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
# Room for activations, the CUDA context and the allocator's slack beyond the weights: a 512-token
# batch of bge-reranker-v2-m3 (XLM-R large) under the default 8192-token budget needs about 1 GiB.
_HEADROOM_BYTES = 1536 * 2**20
_HEADROOM_FACTOR = 1.2


@dataclass(frozen=True, slots=True)
class GpuMemory:
    """One visible GPU: its torch index, free bytes now, and whether it computes in bfloat16."""

    index: int
    free_bytes: int
    bf16: bool


@dataclass(frozen=True, slots=True)
class Placement:
    """The device and dtype chosen, and why (logged, and shown by ``crossrank doctor``)."""

    device: str
    dtype: str
    reason: str


def stored_dtype(model_dir: Path) -> str:
    """The dtype config.json says the weights were saved in (float32 when it does not say)."""
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    return str(config.get("torch_dtype") or config.get("dtype") or "float32")


def count_parameters(model_dir: Path) -> int:
    """Parameters of the model, from the weight files' sizes and the dtype they are stored in."""
    stored = stored_dtype(model_dir)
    size = sum(p.stat().st_size for p in model_dir.glob("*.safetensors"))
    size = size or sum(p.stat().st_size for p in model_dir.glob("pytorch_model*.bin"))
    return size // DTYPE_BYTES.get(stored, 4)


def needed_bytes(parameters: int, dtype: str) -> int:
    """Memory a model of ``parameters`` needs to score at ``dtype``: weights plus activation headroom."""
    return int(parameters * DTYPE_BYTES[dtype] * _HEADROOM_FACTOR) + _HEADROOM_BYTES


def choose_placement(dtype: str, gpus: Sequence[GpuMemory], parameters: int, *, prefer_bf16: bool) -> Placement:
    """Pick the GPU with the most free memory if the model fits there at ``dtype``, else the CPU.

    ``dtype="auto"`` means float16 on a GPU (bfloat16 when the model was trained in it and the GPU has
    it) and float32 on CPU.
    """
    if not gpus:
        return Placement("cpu", "float32" if dtype == "auto" else dtype, "no CUDA GPU is visible")
    best = max(gpus, key=lambda g: g.free_bytes)
    chosen = dtype
    if dtype == "auto":
        chosen = "bfloat16" if prefer_bf16 and best.bf16 else "float16"
    need = needed_bytes(parameters, chosen)
    gib = 2**30
    if best.free_bytes >= need:
        return Placement(
            f"cuda:{best.index}",
            chosen,
            f"cuda:{best.index} has {best.free_bytes / gib:.1f} GiB free, the model needs about {need / gib:.1f} GiB "
            f"at {chosen}",
        )
    cpu_dtype = "float32" if dtype == "auto" else dtype
    return Placement(
        "cpu",
        cpu_dtype,
        f"the model needs about {need / gib:.1f} GiB at {chosen} but the emptiest GPU, cuda:{best.index}, has "
        f"{best.free_bytes / gib:.1f} GiB free; running on CPU",
    )
