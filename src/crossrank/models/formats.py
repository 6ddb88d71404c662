"""Which weight format a model folder holds, and a typed refusal with the fix for every one crossrank cannot run.

Only file names and folder shapes are read here, so this runs at every load for free. The byte-level
checks (headers, sizes, checksums) live in ``integrity.py``.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePath

from crossrank.config import TOKENIZER_INPUTS
from crossrank.errors import IncompleteModelError, IntegrityError, WeightsFormatError

__all__ = [
    "TOKENIZER_FILES",
    "check_tokenizer_json",
    "download_hint",
    "foreign_format",
    "inside_folder",
    "partial_files",
    "require_tokenizer",
    "weight_files",
    "weights_format",
]

# Any one of these is enough for AutoTokenizer to build the model's tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "sentencepiece.bpe.model", "spiece.model", "vocab.json")
_TOKENIZER_JSON = tuple(name for name in TOKENIZER_INPUTS if name.endswith(".json"))
_SAFETENSORS_INDEX = "model.safetensors.index.json"
_PICKLE_INDEX = "pytorch_model.bin.index.json"
_SAFE_CONVERT = (
    "download the safetensors release of the model (crossrank download <model id>), or convert the weights with "
    "the framework that wrote them and save them with safetensors"
)


def download_hint(path: Path) -> str:
    """The command that fetches ``path`` again: its hub id when the folder says which one it is."""
    repo_id = None
    manifest = path / ".crossrank-manifest.json"
    if manifest.is_file():
        try:
            repo_id = json.loads(manifest.read_text(encoding="utf-8")).get("repo_id")
        except (OSError, ValueError):
            repo_id = None
    for parent in path.parents:
        # The Hugging Face cache keeps a snapshot at models--<org>--<name>/snapshots/<commit>.
        if parent.name.startswith("models--") and repo_id is None:
            repo_id = parent.name.removeprefix("models--").replace("--", "/")
    if repo_id:
        return f"crossrank download {repo_id}" + ("" if "snapshots" in path.parts else f" --dir {path}")
    return f"crossrank download <model id> --dir {path}"


def partial_files(path: Path) -> list[Path]:
    """Leftovers of an interrupted download: ``*.incomplete`` files and links to blobs that never arrived."""
    found = list(path.glob("*.incomplete"))
    found += list((path / ".cache" / "huggingface" / "download").glob("*.incomplete"))
    found += [p for p in path.iterdir() if p.is_symlink() and not p.exists()]
    if path.parent.name == "snapshots":
        found += list((path.parent.parent / "blobs").glob("*.incomplete"))
    return sorted(found)


def inside_folder(name: str) -> bool:
    """Whether the file name ``name`` (from an index or manifest in a model folder) stays in that folder.

    Lexical: no ``..``, not absolute (the hub cache's snapshot files are links into ``blobs/``, which is fine).
    """
    path = PurePath(name)
    return bool(name) and not path.is_absolute() and not path.drive and ".." not in path.parts


def _shards(path: Path, index_name: str) -> list[Path]:
    index = path / index_name
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(
            f"{index} is not a readable shard index: {exc}", fix=f"download the model again: {download_hint(path)}"
        ) from exc
    names = sorted({str(name) for name in weight_map.values()})
    outside = [name for name in names if not inside_folder(name)]
    if outside:
        # The index comes with the (possibly downloaded) folder: it must not make us read files elsewhere.
        raise IntegrityError(
            f"{index} names weight shards outside the model folder ({', '.join(map(repr, outside[:3]))})",
            fix=f"download the model again from a source you trust: {download_hint(path)}",
        )
    shards = [path / name for name in names]
    missing = [p.name for p in shards if not p.is_file()]
    if missing:
        raise IncompleteModelError(
            f"{path} is missing {len(missing)} of {len(shards)} weight shards ({', '.join(missing[:3])}): "
            "the download stopped part-way",
            fix=f"finish the download: {download_hint(path)}",
        )
    return shards


def weight_files(path: Path) -> list[Path]:
    """The safetensors files holding the weights (one file, or every shard named by the index)."""
    if (path / "model.safetensors").is_file():
        return [path / "model.safetensors"]
    if (path / _SAFETENSORS_INDEX).is_file():
        return _shards(path, _SAFETENSORS_INDEX)
    return sorted(path.glob("*.safetensors"))


def foreign_format(path: Path) -> WeightsFormatError | None:
    """A refusal for folders that hold weights of another framework or runtime."""
    names = {p.name for p in path.iterdir()}
    if "saved_model.pb" in names or "saved_model.pbtxt" in names or any(path.glob("*/saved_model.pb")):
        return WeightsFormatError(
            f"{path} is a TensorFlow SavedModel (saved_model.pb + variables/); crossrank runs PyTorch weights "
            "in safetensors",
            fix=_SAFE_CONVERT,
        )
    keras = sorted(n for n in names if n.endswith((".h5", ".keras", ".hdf5")))
    if keras:
        return WeightsFormatError(
            f"{path} holds Keras/TensorFlow weights ({', '.join(keras)}) and no safetensors; crossrank runs "
            "PyTorch weights in safetensors",
            fix=_SAFE_CONVERT,
        )
    gguf = sorted(n for n in names if n.endswith(".gguf"))
    if gguf:
        return WeightsFormatError(
            f"{path} holds GGUF weights ({', '.join(gguf)}), a llama.cpp format crossrank does not load",
            fix="use the model's original safetensors release: crossrank download <model id>",
        )
    onnx = sorted(str(p.relative_to(path)) for p in [*path.glob("*.onnx"), *path.glob("onnx/*.onnx")])
    if onnx:
        return WeightsFormatError(
            f"{path} holds only ONNX weights ({', '.join(onnx)}); the torch backend needs safetensors",
            fix="download the safetensors weights next to them: crossrank download <model id>",
        )
    if "flax_model.msgpack" in names:
        return WeightsFormatError(
            f"{path} holds Flax weights (flax_model.msgpack) only; crossrank runs PyTorch weights in safetensors",
            fix=_SAFE_CONVERT,
        )
    return None


def weights_format(path: Path, *, allow_pickle: bool) -> str:
    """``safetensors`` or ``pickle``; anything else (or nothing) raises the error that names it and its fix."""
    partial = partial_files(path)
    if partial:
        shown = ", ".join(p.name for p in partial[:3])
        raise IncompleteModelError(
            f"{path} has {len(partial)} partly downloaded file(s) ({shown}): the download was interrupted",
            fix=f"finish the download (it resumes): {download_hint(path)}",
        )
    if weight_files(path):
        return "safetensors"
    if (path / "pytorch_model.bin").is_file() or (path / _PICKLE_INDEX).is_file():
        if allow_pickle:
            return "pickle"
        raise WeightsFormatError(
            f"{path} holds only pickle weights (pytorch_model.bin), which can run code when loaded",
            fix="convert them to safetensors, or pass allow_pickle=True (--allow-pickle) if you trust the source",
        )
    foreign = foreign_format(path)
    if foreign is not None:
        raise foreign
    found = ", ".join(sorted(p.name for p in path.iterdir())) or "nothing"
    raise IncompleteModelError(
        f"no model weights in {path} (found: {found})",
        fix=f"download the model again; crossrank needs model.safetensors next to config.json: {download_hint(path)}",
    )


def check_tokenizer_json(path: Path) -> None:
    """Name the first of the folder's tokenizer JSON files that does not parse (cut short or corrupt).

    Called after the tokenizer failed to load: transformers' own message quotes the JSON error but not the file.
    """
    for name in _TOKENIZER_JSON:
        file = path / name
        if not file.is_file():
            continue
        try:
            json.loads(file.read_bytes())
        except (OSError, ValueError) as exc:
            raise IntegrityError(
                f"{file} is not valid JSON ({exc}): the file is cut short or corrupt",
                fix=f"download the model again: {download_hint(path)}",
            ) from None


def require_tokenizer(path: Path) -> None:
    """Refuse a folder without any tokenizer file (the download stopped, or only weights were copied)."""
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise IncompleteModelError(
            f"{path} has no tokenizer (none of {', '.join(TOKENIZER_FILES)})",
            fix=f"download the model's tokenizer files too: {download_hint(path)}",
        )
