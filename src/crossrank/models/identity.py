"""What a model folder's files are, as one short digest: the model half of crossrank's fingerprint.

Cheap at load, not a full checksum: each safetensors file contributes its size, its header (names, dtypes,
shapes, offsets) and the first and last bytes of every tensor's data, so weights replaced in place by another
training of the same shape change the digest, even when only the classification head was trained (a pickle file:
its size and evenly spaced blocks, its end included); ``config.json`` and the tokenizer files are hashed whole
(they are small). Two copies of the same files digest alike wherever they sit, so replicas that load the same
model share cached scores, and a folder that merely shares a hub id's name does not.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import BinaryIO

from crossrank.config import TOKENIZER_INPUTS
from crossrank.models.formats import weight_files

__all__ = ["model_digest"]

# Bytes read at each end of a tensor's data, and the blocks sampled from a pickle file.
_EDGE = 4096
_SAMPLES = 16


def _read(handle: BinaryIO, start: int, stop: int) -> bytes:
    handle.seek(start)
    return handle.read(max(0, stop - start))


def _edges(handle: BinaryIO, start: int, stop: int) -> bytes:
    """The first and last ``_EDGE`` bytes of ``[start, stop)`` (all of it when shorter)."""
    if stop - start <= 2 * _EDGE:
        return _read(handle, start, stop)
    return _read(handle, start, start + _EDGE) + _read(handle, stop - _EDGE, stop)


def _safetensors_digest(path: Path) -> bytes:
    size = path.stat().st_size
    digest = hashlib.sha256(f"{path.name}\0{size}\0".encode())
    with path.open("rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        raw = handle.read(length)  # checked by models/info.py before the digest is made
        digest.update(raw)
        spans = sorted(
            tuple(int(x) for x in entry["data_offsets"])
            for name, entry in json.loads(raw).items()
            if name != "__metadata__"
        )
        for start, stop in spans:
            digest.update(_edges(handle, 8 + length + start, 8 + length + stop))
    return digest.digest()


def _pickle_digest(path: Path) -> bytes:
    size = path.stat().st_size
    digest = hashlib.sha256(f"{path.name}\0{size}\0".encode())
    with path.open("rb") as handle:
        for k in range(_SAMPLES + 1):
            start = (size - _EDGE) * k // _SAMPLES
            digest.update(_read(handle, max(0, start), start + _EDGE))
    return digest.digest()


def model_digest(folder: Path, *, allow_pickle: bool = False) -> str:
    """sha256 (hex) of ``folder``'s weight files (sizes, headers, sampled bytes), config and tokenizer files."""
    digest = hashlib.sha256()
    for path in weight_files(folder):
        digest.update(_safetensors_digest(path))
    if allow_pickle:
        for path in sorted(folder.glob("*.bin")):
            digest.update(_pickle_digest(path))
    for name in ("config.json", *TOKENIZER_INPUTS):
        file = folder / name
        if file.is_file():
            digest.update(f"{name}\0".encode() + hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()
