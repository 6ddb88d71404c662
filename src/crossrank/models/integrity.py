"""Byte-level integrity: safetensors headers against file sizes, sha256 checksums, the download manifest.

A safetensors file is an 8-byte little-endian header length, a JSON header naming every tensor's dtype,
shape and byte range, then the data. Reading the header alone proves the file is complete (its last
tensor ends exactly at the end of the file) without reading gigabytes, so that check runs at every load;
checksums read every byte and run in ``crossrank verify``.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crossrank.errors import IncompleteModelError, IntegrityError
from crossrank.models.formats import download_hint, inside_folder

__all__ = [
    "MANIFEST_NAME",
    "Manifest",
    "TensorInfo",
    "compare_manifest",
    "read_manifest",
    "read_safetensors_header",
    "sha256_file",
    "write_manifest",
]

MANIFEST_NAME = ".crossrank-manifest.json"
_MAX_HEADER = 100 * 1024 * 1024  # the format's own limit; a bigger number means the first bytes are garbage
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """One tensor as a safetensors header describes it."""

    dtype: str
    shape: tuple[int, ...]
    nbytes: int


def _corrupt(file: Path, what: str) -> IntegrityError:
    return IntegrityError(f"{file} is corrupt: {what}", fix=f"download the model again: {download_hint(file.parent)}")


def read_safetensors_header(file: Path) -> dict[str, TensorInfo]:
    """Parse ``file``'s header and check the data it promises is all there, and nothing more."""
    size = file.stat().st_size
    with file.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise IncompleteModelError(
                f"{file} is truncated: {size} bytes, too short to hold a safetensors header",
                fix=f"download it again: {download_hint(file.parent)}",
            )
        (length,) = struct.unpack("<Q", head)
        if length > _MAX_HEADER:
            raise _corrupt(file, f"its header length field reads {length:,} bytes, so it is not safetensors data")
        raw = handle.read(length)
    if len(raw) < length:
        raise IncompleteModelError(
            f"{file} is truncated: {size:,} bytes, but its header alone is {8 + length:,} bytes",
            fix=f"download it again: {download_hint(file.parent)}",
        )
    try:
        header: dict[str, Any] = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _corrupt(file, f"its header is not valid JSON ({exc})") from None
    tensors: dict[str, TensorInfo] = {}
    end = 0
    try:
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            start, stop = (int(x) for x in entry["data_offsets"])
            shape = tuple(int(x) for x in entry["shape"])
            tensors[name] = TensorInfo(dtype=str(entry["dtype"]), shape=shape, nbytes=stop - start)
            end = max(end, stop)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise _corrupt(file, f"its header does not describe tensors ({exc!r})") from None
    expected = 8 + length + end
    if size < expected:
        raise IncompleteModelError(
            f"{file} is truncated: {size:,} of {expected:,} bytes ({size / expected:.0%}); the download stopped "
            "part-way",
            fix=f"download it again: {download_hint(file.parent)}",
        )
    if size > expected:
        raise _corrupt(file, f"{size - expected:,} bytes follow the last tensor")
    for name, info in tensors.items():
        width = _DTYPE_BYTES.get(info.dtype)
        count = 1
        for dim in info.shape:
            count *= dim
        if width is not None and count * width != info.nbytes:
            raise _corrupt(file, f"tensor {name} {list(info.shape)} {info.dtype} claims {info.nbytes} bytes")
    return tensors


def sha256_file(file: Path) -> str:
    """Hex sha256 of ``file``, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with file.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class Manifest:
    """What ``crossrank download`` recorded: where the files came from, and each file's size and sha256."""

    repo_id: str
    revision: str | None
    commit: str | None
    files: dict[str, tuple[int, str]]


def write_manifest(folder: Path, *, repo_id: str, revision: str | None, commit: str | None) -> Manifest:
    """Checksum every file of ``folder`` (following the hub cache's links) and record them."""
    files = {
        str(p.relative_to(folder)): (p.stat().st_size, sha256_file(p))
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST_NAME and ".cache" not in p.relative_to(folder).parts
    }
    payload = {
        "format": 1,
        "repo_id": repo_id,
        "revision": revision,
        "commit": commit,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "files": {name: {"size": size, "sha256": sha} for name, (size, sha) in files.items()},
    }
    (folder / MANIFEST_NAME).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return Manifest(repo_id=repo_id, revision=revision, commit=commit, files=files)


def read_manifest(folder: Path) -> Manifest | None:
    """The manifest in ``folder``, or ``None`` when there is none."""
    file = folder / MANIFEST_NAME
    if not file.is_file():
        return None
    try:
        payload = json.loads(file.read_text(encoding="utf-8"))
        files = {name: (int(v["size"]), str(v["sha256"])) for name, v in payload["files"].items()}
        return Manifest(
            repo_id=str(payload["repo_id"]), revision=payload.get("revision"), commit=payload.get("commit"), files=files
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _corrupt(file, f"the manifest cannot be read ({exc!r})") from None


def compare_manifest(folder: Path, expected: dict[str, tuple[int | None, str | None]]) -> list[str]:
    """Files of ``folder`` whose size or sha256 differs from ``expected`` (name -> (size, sha256); None: unknown)."""
    problems = []
    for name, (size, sha) in sorted(expected.items()):
        if not inside_folder(name):
            # A manifest comes with the folder: it must not make us read (or hang on) files elsewhere.
            problems.append(f"{name!r} is not a file of the model folder")
            continue
        file = folder / name
        if not file.is_file():
            problems.append(f"{name} is missing")
            continue
        actual_size = file.stat().st_size
        if size is not None and actual_size != size:
            problems.append(f"{name} has {actual_size:,} bytes, expected {size:,}")
        elif sha is not None and sha256_file(file) != sha:
            problems.append(f"{name} has a different sha256 than recorded (its bytes changed)")
    return problems
