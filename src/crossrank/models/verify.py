"""The full check of a model folder (``crossrank verify``): everything the load checks, plus every byte.

Load runs the cheap checks (file names, formats, safetensors headers against file sizes, the head,
embedding shapes). This adds what needs reading all the data or loading more: sha256 of every file
against the download manifest or the hub's listing, the remaining config-to-weights shapes, and
whether the tokenizer loads and fits the embedding matrix. For a decoder (LLM) reranker it adds its
score head: the family's score tokens are in the tokenizer, and the weights hold the head they are read from.
Nothing here runs a model's code, so a checkpoint that ships its own (minicpm-layerwise) is checked as well.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from crossrank.errors import CrossrankError, IntegrityError, ModelNotFoundError, UnsupportedModelError
from crossrank.families import AUTO, Family, ScoreHead
from crossrank.models.formats import download_hint, weight_files
from crossrank.models.info import ModelInfo, read_model_info
from crossrank.models.integrity import TensorInfo, compare_manifest, read_manifest, read_safetensors_header
from crossrank.models.resolve import is_hub_id

__all__ = ["STATUS_ORDER", "Check", "Status", "VerifyReport", "model_folder", "verify_model", "worst"]

Status = Literal["ok", "warn", "fail"]
STATUS_ORDER: dict[Status, int] = {"ok": 0, "warn": 1, "fail": 2}
# The token embedding table: an encoder's, a decoder's.
_EMBEDDINGS = ("embeddings.word_embeddings.weight", "embed_tokens.weight")
# A layer-wise checkpoint's score heads, one per cutoff layer from config.json's start_layer on (or one for all).
_LAYER_HEAD = re.compile(r"lm_head\.(?:(\d+)\.)?linear_head\.weight")


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
    """What ``verify_model`` found, in the order it checked, and the family the model is scored as (``None`` when
    its config and files do not say)."""

    path: Path
    checks: list[Check] = field(default_factory=list)
    family: Family | None = None

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
    if "vocab_size" in config and hidden is not None:
        table = (int(config["vocab_size"]), int(hidden))
        for name, tensor in tensors.items():
            # A decoder's token table and its own LM head (when not tied to the table): the score tokens' rows.
            if name.endswith(("embed_tokens.weight", "lm_head.weight")) and tensor.shape != table:
                problems.append(
                    f"{name} is {list(tensor.shape)} but config.json vocab_size x hidden_size is {list(table)}"
                )
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


def _embedding_rows(tensors: dict[str, TensorInfo]) -> int | None:
    return next((t.shape[0] for n, t in tensors.items() if n.endswith(_EMBEDDINGS)), None)


def _tokenizer(path: Path, tensors: dict[str, TensorInfo]) -> Check:
    rows = _embedding_rows(tensors)
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


def _formula(head: ScoreHead) -> str:
    if head.negative is None:
        return f"logit({head.positive!r}) at the last position"
    return (
        f"logit({head.positive!r}) - logit({head.negative!r}) at the last position "
        f"(its sigmoid is the softmax over {head.negative!r}, {head.positive!r})"
    )


def _token_ids(path: Path, head: ScoreHead, rows: int | None) -> tuple[list[str], Check | None]:
    """Each score token's id as the engine reads it (its first id, as upstream does), or the failed check."""
    from tokenizers import Tokenizer

    file = path / "tokenizer.json"
    try:
        tokenizer = Tokenizer.from_file(str(file))
    except Exception:  # a bad tokenizer.json is the tokenizer check's finding
        return [], Check("score head", "warn", "tokenizer.json does not load, so the score tokens were not looked up")
    found = []
    for token in (head.positive, head.negative):
        if token is None:
            continue
        ids: list[int] = tokenizer.encode(token, add_special_tokens=False).ids
        if not ids or (rows is not None and ids[0] >= rows):
            where = "is not in this tokenizer" if not ids else f"is id {ids[0]}, past the {rows:,} rows of the weights"
            error = UnsupportedModelError(
                f"the score token {token!r} {where}: the tokenizer is not the model's",
                fix=f"put the model's own tokenizer files in the folder: {download_hint(path)}",
            )
            return [], _failed("score head", error)
        if len(ids) > 1:
            return [], Check(
                "score head",
                "warn",
                f"the score token {token!r} is {len(ids)} tokens in this tokenizer ({ids}); its first is read, as "
                "upstream does, but the family's own tokenizer has it as one token",
                f"check the tokenizer is the model's own: {download_hint(path)}",
            )
        found.append(f"{token!r} = id {ids[0]}")
    return found, None


def _layer_heads(path: Path, config: dict[str, Any], tensors: dict[str, TensorInfo]) -> str | None:
    """A layer-wise checkpoint's score (``None`` for a model read through its LM head); raises
    ``UnsupportedModelError`` when the last layer, which scores by default, has no head."""
    found = [m[1] for name in tensors if (m := _LAYER_HEAD.fullmatch(name))]
    if not found:
        return None
    last = int(config.get("num_hidden_layers", 0))
    if None in found:
        return f"a cutoff layer's state read by the one score head of every layer (lm_head.linear_head; default {last})"
    start = int(config.get("start_layer", 0))
    layers = sorted(start + int(index) for index in found)
    if last not in layers:
        raise UnsupportedModelError(
            f"{path} has no score head for layer {last}, the last (lm_head.{last - start}.linear_head.weight); its "
            f"weights hold heads for layers {layers[0]}-{layers[-1]}",
            fix=f"config.json and the weights come from different models, or the files are cut short: "
            f"{download_hint(path)}",
        )
    heads = f"heads for layers {layers[0]}-{layers[-1]}"
    return f"a cutoff layer's own score head at the last position ({heads}; default {last})"


def _lm_head(path: Path, config: dict[str, Any], tensors: dict[str, TensorInfo]) -> str:
    """Where the score tokens' rows of the LM head are; raises ``UnsupportedModelError`` when there are none."""
    if any(n.endswith("lm_head.weight") for n in tensors):
        return "its own LM head"
    if config.get("tie_word_embeddings") and any(n.endswith("embed_tokens.weight") for n in tensors):
        return "the LM head tied to the token embeddings"
    raise UnsupportedModelError(
        f"{path}'s weights have no language-model head (no lm_head.weight, and config.json does not tie it to the "
        "token embeddings): the score tokens' logits cannot be read",
        fix=f"it is a base model without its head, or cut short: {download_hint(path)}",
    )


def _score_head(path: Path, family: Family, config: dict[str, Any], tensors: dict[str, TensorInfo]) -> Check:
    """A decoder family's score: its tokens are single tokens of the tokenizer and its head is in the weights."""
    assert family.head is not None
    try:
        layered = _layer_heads(path, config, tensors)
        read = layered or f"{_formula(family.head)}, from {_lm_head(path, config, tensors)}"
    except UnsupportedModelError as error:
        return _failed("score head", error)
    if not (path / "tokenizer.json").is_file():
        return Check("score head", "warn", f"{read}; no tokenizer.json, so the score tokens were not looked up")
    found, problem = _token_ids(path, family.head, _embedding_rows(tensors))
    if problem is not None:
        return problem
    return Check("score head", "ok", f"{family.name}: {read}; {', '.join(found)}")


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


def verify_model(path: Path, *, allow_pickle: bool = False, family: str = AUTO) -> VerifyReport:
    """Run every check on the model folder ``path``; never raises for a broken model, it reports it.

    ``family`` names a decoder reranker's family where its name does not say it (``auto``: detected).
    """
    path = path.expanduser().resolve()
    if not path.is_dir():
        model_folder(str(path))  # raises the error that says what is there instead
    checks: list[Check] = []
    try:
        info: ModelInfo = read_model_info(path, allow_pickle=allow_pickle, family=family)
    except CrossrankError as error:
        return VerifyReport(path, [_failed("format", error)])
    scored = f", family {info.family.name}" if info.family.decoder else ""
    checks.append(
        Check(
            "format",
            "ok",
            f"{info.architecture} ({info.model_type}){scored}, {info.weights} weights, {info.max_length} tokens",
        )
    )
    checks.append(_checksums(path))
    if info.weights != "safetensors":
        checks.append(Check("shapes", "warn", "pickle weights: shapes are only checked when the model loads"))
        return VerifyReport(path, checks, info.family)
    tensors: dict[str, TensorInfo] = {}
    for file in weight_files(path):
        tensors.update(read_safetensors_header(file))
    config = _config(path)
    checks.append(_shapes(path, config, tensors))
    checks.append(_tokenizer(path, tensors))
    if info.family.decoder:
        checks.append(_score_head(path, info.family, config, tensors))
    return VerifyReport(path, checks, info.family)
