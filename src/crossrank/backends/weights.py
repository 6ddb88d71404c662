"""A checkpoint's weights cast to another precision as they are read, a slice at a time.

transformers casts float32 safetensors to bfloat16 (``dtype="auto"`` on a CPU where bfloat16 is fastest) from the
memory-mapped file, whose pages stay resident, and count in the process's memory, until the whole file is closed:
m3-shape peaked at 3.9 GB in bfloat16 against 1.9 GB in float32 (BENCHMARKS.md). Here each slice of at most
``_SLICE_BYTES`` is read with plain reads (no mapping) and cast, so only the cast copy and one slice are resident
(safetensors' own ``pread`` reader reads a whole tensor for each slice asked of it); ``TorchBackend`` then builds
the model from that state dict with ``from_pretrained`` itself (key renames, tied weights and all), which keeps the
tensors without copying them. ``quiet_loading`` keeps transformers' progress bar off while crossrank loads one.
"""

from __future__ import annotations

import contextlib
import io
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from transformers.utils import logging as transformers_logging

__all__ = ["cast_state_dict", "quiet_loading"]

# The most read at once while casting: a slice of one tensor.
_SLICE_BYTES = 64 << 20
_FLOATS = {"F64", "F32", "F16", "BF16"}
_STORED = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}  # fmt: skip
_TORCH_NAMES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


def _weight_files(model_dir: Path) -> list[Path] | None:
    """The safetensors files ``from_pretrained`` reads: the shards an index names, or ``model.safetensors``."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        return [model_dir / name for name in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    single = model_dir / "model.safetensors"
    return [single] if single.is_file() else None


def cast_state_dict(model_dir: Path, dtype: torch.dtype) -> dict[str, torch.Tensor] | None:
    """Every tensor of ``model_dir``'s safetensors checkpoint, the floating-point ones in ``dtype``; ``None`` where
    there is nothing to gain (no safetensors checkpoint, or its floats are stored in ``dtype`` already, which
    ``from_pretrained`` maps without a copy) or the files do not read (``from_pretrained`` then says why)."""
    try:
        files = _weight_files(model_dir)
        if files is None:
            return None
        layouts = [_layout(file) for file in files]
        stored = {entry["dtype"] for layout in layouts for entry in layout.values()} & _FLOATS
        if not stored or stored == {_TORCH_NAMES.get(dtype)}:
            return None
        tensors: dict[str, torch.Tensor] = {}
        buffer = memoryview(bytearray(_SLICE_BYTES))
        for file, layout in zip(files, layouts, strict=True):
            with file.open("rb") as handle:
                tensors |= {name: _read(handle, entry, dtype, buffer) for name, entry in layout.items()}
        return tensors
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _layout(file: Path) -> dict[str, dict[str, Any]]:
    """Each tensor's dtype, shape and absolute byte offsets, from the file's header (the format: an 8-byte
    little-endian header length, then the JSON header; ``models/integrity.py`` checks it against the file's size)."""
    with file.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header: dict[str, Any] = json.loads(handle.read(length))
    header.pop("__metadata__", None)
    return {name: {**entry, "start": 8 + length + int(entry["data_offsets"][0])} for name, entry in header.items()}


def _read(handle: io.BufferedReader, entry: dict[str, Any], dtype: torch.dtype, buffer: memoryview) -> torch.Tensor:
    """One tensor read with plain reads into ``buffer``, a float one cast to ``dtype`` a slice at a time."""
    kind, shape = entry["dtype"], [int(n) for n in entry["shape"]]
    stored = _STORED[kind]
    tensor = torch.empty(shape, dtype=dtype if kind in _FLOATS else stored)
    flat = tensor.view(-1)
    width = torch.empty((), dtype=stored).element_size()
    step = len(buffer) // width
    handle.seek(entry["start"])
    for start in range(0, flat.numel(), step):
        count = min(step, flat.numel() - start)
        if handle.readinto(buffer[: count * width]) != count * width:
            raise ValueError("the file ends inside a tensor")
        flat[start : start + count].copy_(torch.frombuffer(buffer, dtype=stored, count=count))
    return tensor


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """transformers' "Loading weights" progress bar off while crossrank loads a model (the loader logs one line
    instead): it was printed on every load, from the library too and to logs that are not terminals."""
    shown = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        if shown:
            transformers_logging.enable_progress_bar()  # type: ignore[no-untyped-call]
