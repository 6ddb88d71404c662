"""What a model folder holds: architecture, label count, window length, weight format."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from crossrank.errors import IntegrityError, ModelNotFoundError, UnsupportedModelError

__all__ = ["ModelInfo", "read_model_info"]

# Position ids of the RoBERTa family start after padding_idx, so 2 of the table's rows are never
# usable: bge-reranker-v2-m3's 8194 positions give an 8192-token window.
_OFFSET_POSITION_TYPES = frozenset({"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "longformer"})
_SAFETENSORS = ("model.safetensors", "model.safetensors.index.json")
_PICKLE = ("pytorch_model.bin", "pytorch_model.bin.index.json")


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """Facts read from a model folder without loading weights.

    Attributes:
        path: the folder.
        model_type: ``config.json``'s ``model_type`` (``xlm-roberta``, ``bert``, ...).
        architecture: the first of ``architectures``.
        max_length: the longest pair, in tokens, the position table allows.
        weights: ``safetensors`` or ``pickle``.
    """

    path: Path
    model_type: str
    architecture: str
    max_length: int
    weights: str


def _weights_format(path: Path, allow_pickle: bool) -> str:
    if any((path / name).is_file() for name in _SAFETENSORS):
        return "safetensors"
    if any((path / name).is_file() for name in _PICKLE):
        if allow_pickle:
            return "pickle"
        raise UnsupportedModelError(
            f"{path} holds only pickle weights (pytorch_model.bin), which can run code when loaded",
            fix="convert them to safetensors, or pass allow_pickle=True (--allow-pickle) if you trust the source",
        )
    found = ", ".join(sorted(p.name for p in path.iterdir())) or "nothing"
    raise IntegrityError(
        f"no model weights in {path} (found: {found})",
        fix="download the model again; crossrank needs model.safetensors next to config.json",
    )


def read_model_info(path: Path, *, allow_pickle: bool = False) -> ModelInfo:
    """Read ``path/config.json`` and check it is a one-label sequence classifier with usable weights."""
    config_file = path / "config.json"
    if not config_file.is_file():
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
    model_type = str(config.get("model_type", "unknown"))
    positions = int(config.get("max_position_embeddings", 512))
    offset = int(config.get("pad_token_id", 1)) + 1 if model_type in _OFFSET_POSITION_TYPES else 0
    return ModelInfo(
        path=path,
        model_type=model_type,
        architecture=architecture,
        max_length=positions - offset,
        weights=_weights_format(path, allow_pickle),
    )
