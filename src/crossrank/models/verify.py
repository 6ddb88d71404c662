"""The full check of a model folder (``crossrank verify``): everything the load checks, plus every byte.

Load runs the cheap checks (file names, formats, safetensors headers against file sizes, the head,
embedding shapes). This adds what needs reading all the data or loading more: sha256 of every file
against the download manifest or the hub's listing, the remaining config-to-weights shapes, and
whether the tokenizer loads and fits the embedding matrix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from crossrank.errors import CrossrankError, IntegrityError, ModelNotFoundError
from crossrank.models.formats import download_hint, weight_files
from crossrank.models.info import ModelInfo, read_model_info
from crossrank.models.integrity import TensorInfo, compare_manifest, read_manifest, read_safetensors_header
from crossrank.models.resolve import is_hub_id

__all__ = ["STATUS_ORDER", "Check", "Status", "VerifyReport", "model_folder", "verify_model", "worst"]

Status = Literal["ok", "warn", "fail"]
STATUS_ORDER: dict[Status, int] = {"ok": 0, "warn": 1, "fail": 2}


@dataclass(frozen=True, slots=True)
class Check:
    """One finding: what was checked, how it went, what was seen, and the fix when it is not ``ok``.

    ``error`` names the crossrank error class a failed load would raise (e.g. ``IncompleteModelError``).
    """

    name: str
    status: Status
    detail: str
    fix: str | None = None
    error: str | None = None


def worst(checks: list[Check]) -> Status:
    """The worst status among ``checks`` (``ok`` when there are none)."""
    return max((c.status for c in checks), key=STATUS_ORDER.__getitem__, default="ok")


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What ``verify_model`` found, in the order it checked."""

    path: Path
    checks: list[Check] = field(default_factory=list)

    @property
    def status(self) -> Status:
        return worst(self.checks)


def _failed(name: str, error: CrossrankError) -> Check:
    return Check(name, "fail", error.message, error.fix, type(error).__name__)


def _checksums(path: Path) -> Check:
    manifest = read_manifest(path)
    expected: dict[str, tuple[int | None, str | None]] = {}
    source = ""
    if manifest is not None:
        expected = {name: (size, sha) for name, (size, sha) in manifest.files.items()}
        source = f"the download manifest ({manifest.repo_id} at {(manifest.commit or '?')[:12]}, size and sha256)"
    elif path.parent.name == "snapshots" and path.parent.parent.name.startswith("models--"):
        # Imported here: huggingface_hub is only needed for folders it made.
        from crossrank.models.download import hub_sizes

        repo_id = path.parent.parent.name.removeprefix("models--").replace("--", "/")
        listed = hub_sizes(repo_id, path.name, path, cache_dir=str(path.parents[2])) or {}
        expected = {name: (size, None) for name, size in listed.items()}
        source = f"the sizes in the hub's listing of {repo_id} at {path.name[:12]} (no manifest, so no sha256)"
    if not expected:
        return Check(
            "checksums",
            "warn",
            "no manifest and no hub listing: the bytes cannot be compared with the source",
            f"download with `{download_hint(path)}` to get a manifest",
        )
    problems = compare_manifest(path, expected)
    if problems:
        error = IntegrityError(
            f"{len(problems)} file(s) differ from {source}: {'; '.join(problems)}",
            fix=f"download the model again: {download_hint(path)}",
        )
        return _failed("checksums", error)
    return Check("checksums", "ok", f"{len(expected)} file(s) match {source}")


def _config(path: Path) -> dict[str, Any]:
    config: dict[str, Any] = json.loads((path / "config.json").read_text(encoding="utf-8"))
    return config


def _shapes(path: Path, config: dict[str, Any], tensors: dict[str, TensorInfo]) -> Check:
    expectations = {
        "embeddings.position_embeddings.weight": ("max_position_embeddings", 0),
        "embeddings.token_type_embeddings.weight": ("type_vocab_size", 0),
    }
    problems = []
    for suffix, (key, axis) in expectations.items():
        for name, tensor in tensors.items():
            if name.endswith(suffix) and key in config and tensor.shape[axis] != int(config[key]):
                problems.append(f"{name} has {tensor.shape[axis]} rows but config.json {key} is {config[key]}")
    hidden = config.get("hidden_size")
    for name, tensor in tensors.items():
        if name.endswith("LayerNorm.weight") and hidden is not None and tensor.shape != (int(hidden),):
            problems.append(f"{name} is {list(tensor.shape)} but config.json hidden_size is {hidden}")
    if problems:
        error = IntegrityError(
            f"config.json and the weights disagree: {'; '.join(problems[:3])}",
            fix=f"they come from different models: {download_hint(path)}",
        )
        return _failed("shapes", error)
    parameters = sum(t.nbytes // max(_width(t.dtype), 1) for t in tensors.values())
    return Check("shapes", "ok", f"{len(tensors)} tensors, {parameters / 1e6:.1f}M parameters agree with config.json")


def _width(dtype: str) -> int:
    return {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4}.get(dtype, 1)


def _tokenizer(path: Path, tensors: dict[str, TensorInfo]) -> Check:
    rows = next((t.shape[0] for n, t in tensors.items() if n.endswith("embeddings.word_embeddings.weight")), None)
    if (path / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        try:
            size = Tokenizer.from_file(str(path / "tokenizer.json")).get_vocab_size(with_added_tokens=True)
        except Exception as exc:  # the Rust tokenizer raises a bare Exception on a bad file
            error = IntegrityError(
                f"tokenizer.json does not load: {exc}", fix=f"download the model again: {download_hint(path)}"
            )
            return _failed("tokenizer", error)
        what = "tokenizer.json"
    elif (path / "vocab.txt").is_file():
        size = sum(1 for _ in (path / "vocab.txt").open(encoding="utf-8"))
        what = "vocab.txt"
    else:
        return Check("tokenizer", "warn", "only a sentencepiece/BPE tokenizer here; its size was not checked")
    if rows is not None and size > rows:
        error = IntegrityError(
            f"{what} has {size:,} tokens but the embedding matrix only {rows:,} rows: the tokenizer belongs to "
            "another model (ids past the table would crash or read garbage)",
            fix=f"put the model's own tokenizer files in the folder: {download_hint(path)}",
        )
        return _failed("tokenizer", error)
    fits = f" (embedding matrix: {rows:,} rows)" if rows is not None else ""
    return Check("tokenizer", "ok", f"{what} loads, {size:,} tokens{fits}")


def model_folder(target: str, *, cache_dir: str | None = None) -> Path:
    """The folder ``verify`` checks: ``target`` itself, or the cached download of the hub id ``target``.

    Raises ``ModelNotFoundError`` when there is no folder to check (a missing path, a file, a hub id not
    downloaded); never touches the network.
    """
    path = Path(target).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ModelNotFoundError(
            f"{path.resolve()} is a file, not a model folder", fix="pass the folder that holds config.json"
        )
    if is_hub_id(target) and "/" in target:
        # Imported here: huggingface_hub is only needed for hub ids.
        from crossrank.models.download import cached_snapshot

        folder = cached_snapshot(target, cache_dir=cache_dir)
        if folder is not None:
            return folder
        raise ModelNotFoundError(
            f"{target} is not downloaded (not in the Hugging Face cache) and is not a local folder",
            fix=f"download it first: crossrank download {target}",
        )
    raise ModelNotFoundError(f"no model folder at {path.resolve()}", fix="check the path")


def verify_model(path: Path, *, allow_pickle: bool = False) -> VerifyReport:
    """Run every check on the model folder ``path``; never raises for a broken model, it reports it."""
    path = path.expanduser().resolve()
    if not path.is_dir():
        model_folder(str(path))  # raises the error that says what is there instead
    checks: list[Check] = []
    try:
        info: ModelInfo = read_model_info(path, allow_pickle=allow_pickle)
    except CrossrankError as error:
        return VerifyReport(path, [_failed("format", error)])
    checks.append(
        Check(
            "format", "ok", f"{info.architecture} ({info.model_type}), {info.weights} weights, {info.max_length} tokens"
        )
    )
    checks.append(_checksums(path))
    if info.weights != "safetensors":
        checks.append(Check("shapes", "warn", "pickle weights: shapes are only checked when the model loads"))
        return VerifyReport(path, checks)
    tensors: dict[str, TensorInfo] = {}
    for file in weight_files(path):
        tensors.update(read_safetensors_header(file))
    checks.append(_shapes(path, _config(path), tensors))
    checks.append(_tokenizer(path, tensors))
    return VerifyReport(path, checks)
