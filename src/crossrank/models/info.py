"""What a model folder holds: architecture, label count, window length, weight format."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crossrank.errors import IntegrityError, ModelNotFoundError, UnsupportedModelError
from crossrank.families import AUTO, Family, detect_family
from crossrank.models.formats import download_hint, foreign_format, require_tokenizer, weight_files, weights_format
from crossrank.models.integrity import TensorInfo, read_manifest, read_safetensors_header

__all__ = ["ModelInfo", "read_model_info"]

# Position ids of the RoBERTa family start after padding_idx, so 2 of the table's rows are never
# usable: bge-reranker-v2-m3's 8194 positions give an 8192-token window.
_OFFSET_POSITION_TYPES = frozenset({"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "longformer"})
# Top-level names of the layers that turn the encoder's output into the score.
_HEAD_PREFIXES = frozenset({"classifier", "score"})


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """Facts read from a model folder without loading weights.

    Attributes:
        path: the folder.
        model_type: ``config.json``'s ``model_type`` (``xlm-roberta``, ``bert``, ...).
        architecture: the first of ``architectures``.
        max_length: the longest pair, in tokens, the position table allows.
        weights: ``safetensors`` or ``pickle``.
        family: how it is scored (``crossrank.families``): a cross-encoder, or a decoder reranker's family.
    """

    path: Path
    model_type: str
    architecture: str
    max_length: int
    weights: str
    family: Family


def _check_weights(path: Path, config: dict[str, Any], num_labels: int) -> None:
    """Header-only checks: every file complete, a classification head present, shapes as config.json says."""
    tensors: dict[str, TensorInfo] = {}
    for file in weight_files(path):
        tensors.update(read_safetensors_header(file))
    head = {name: t for name, t in tensors.items() if name.split(".")[0] in _HEAD_PREFIXES}
    if not head:
        raise UnsupportedModelError(
            f"{path}'s weights have no classification head (no classifier.* tensors): it is an embedding or base "
            "model, whose score would come from a randomly initialised layer",
            fix="use a trained reranker such as BAAI/bge-reranker-v2-m3",
        )
    if not any(name.endswith("weight") and t.shape[:1] == (num_labels,) for name, t in head.items()):
        shapes = ", ".join(f"{n} {list(t.shape)}" for n, t in sorted(head.items()))
        raise IntegrityError(
            f"{path}'s classification head ({shapes}) does not give the {num_labels} label(s) config.json declares",
            fix=f"config.json and the weights come from different models: {download_hint(path)}",
        )
    for name, tensor in tensors.items():
        if name.endswith("embeddings.word_embeddings.weight"):
            vocab, hidden = config.get("vocab_size", tensor.shape[0]), config.get("hidden_size", tensor.shape[-1])
            expected = (int(vocab), int(hidden))
            if tensor.shape != expected:
                raise IntegrityError(
                    f"{path}: the word embeddings are {list(tensor.shape)} but config.json says vocab_size x "
                    f"hidden_size = {list(expected)}",
                    fix=f"config.json and the weights come from different models: {download_hint(path)}",
                )


def _names(path: Path, given: Sequence[str]) -> list[str]:
    """What a model is called: the names given (a hub id), its folder's, a hub cache folder's repository, and the
    repository a ``crossrank download --dir`` folder's manifest records."""
    names = [*given, path.name]
    if path.parent.name == "snapshots":  # <cache>/models--org--name/snapshots/<commit>
        names.append(path.parent.parent.name.removeprefix("models--").replace("--", "/"))
    manifest = read_manifest(path)
    if manifest is not None:
        names.append(manifest.repo_id)
    return names


def read_model_info(
    path: Path, *, allow_pickle: bool = False, family: str = AUTO, names: Sequence[str] = ()
) -> ModelInfo:
    """Read ``path/config.json`` and check it is a reranker with usable weights: a one-label sequence classifier,
    or a causal LM of a decoder reranker family (``family``, or detected from the config and ``names``).

    The checks are the cheap ones (names, headers and sizes, no checksums), so they run at every load:
    a partial download, a file cut short, weights of another framework, a missing tokenizer or head
    each raise their own error with the fix. ``crossrank verify`` adds the full checks.
    """
    config_file = path / "config.json"
    if not config_file.is_file():
        foreign = foreign_format(path)
        if foreign is not None:
            raise foreign
        raise ModelNotFoundError(
            f"{path} has no config.json, so it is not a Hugging Face model folder",
            fix="point to the folder that holds config.json, or download the model: hf download <model id>",
        )
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IntegrityError(f"{config_file} is not valid JSON: {exc}", fix="download the model again") from exc
    architectures = config.get("architectures") or ["unknown"]
    architecture = str(architectures[0])
    detected = detect_family(family, config, _names(path, names))
    if detected.decoder:
        weights = weights_format(path, allow_pickle=allow_pickle)
        require_tokenizer(path)
        return ModelInfo(
            path=path,
            model_type=str(config.get("model_type", "unknown")),
            architecture=architecture,
            max_length=int(config.get("max_position_embeddings", 512)),
            weights=weights,
            family=detected,
        )
    if not architecture.endswith("ForSequenceClassification"):
        raise UnsupportedModelError(
            f"{path} is a {architecture}, not a cross-encoder (a *ForSequenceClassification model); "
            "embedding models cannot rerank pairs",
            fix="use a reranker such as BAAI/bge-reranker-v2-m3",
        )
    num_labels = len(config["id2label"]) if "id2label" in config else int(config.get("num_labels", 2))
    if num_labels != 1:
        raise UnsupportedModelError(
            f"{path} has {num_labels} output labels; crossrank scores with one-label rerankers",
            fix="use a reranker whose config.json has a single label (num_labels: 1)",
        )
    weights = weights_format(path, allow_pickle=allow_pickle)
    require_tokenizer(path)
    if weights == "safetensors":
        _check_weights(path, config, num_labels)
    model_type = str(config.get("model_type", "unknown"))
    positions = int(config.get("max_position_embeddings", 512))
    offset = int(config.get("pad_token_id", 1)) + 1 if model_type in _OFFSET_POSITION_TYPES else 0
    return ModelInfo(
        path=path,
        model_type=model_type,
        architecture=architecture,
        max_length=positions - offset,
        weights=weights,
        family=detected,
    )
