"""Turn a model name or path into a local folder, checked enough to load."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from crossrank.config import ModelSpec
from crossrank.errors import ModelNotFoundError
from crossrank.models.info import ModelInfo, read_model_info

__all__ = ["is_hub_id", "resolve_model", "snapshot_commit"]

_log = logging.getLogger(__name__)

# "name" or "org/name", each part starting with a letter or digit.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def is_hub_id(name: str) -> bool:
    """Whether ``name`` is spelled like a Hugging Face hub id (``BAAI/bge-reranker-v2-m3``) rather than a path."""
    return bool(_HUB_ID.fullmatch(name)) and ".." not in name


def snapshot_commit(folder: Path) -> str | None:
    """The hub commit a Hugging Face cache folder holds (``models--<org>--<name>/snapshots/<commit>``), else None."""
    return folder.name if folder.parent.name == "snapshots" else None


def resolve_model(spec: ModelSpec) -> ModelInfo:
    """Find ``spec``'s folder (local, or hub cache, downloading if needed) and read its facts.

    A name that is an existing folder is used as it is; a hub-id-shaped name that is not is
    looked up on the hub; anything else is a missing folder.
    """
    path = Path(spec.name_or_path).expanduser()
    if path.is_dir():
        if not path.is_absolute() and is_hub_id(spec.name_or_path):
            _log.warning(
                "%r is a folder in the working directory: loading it, not the hub model of that name "
                "(pass an absolute path to silence this, or run from another directory to use the hub)",
                spec.name_or_path,
            )
        return read_model_info(path.resolve(), allow_pickle=spec.allow_pickle, family=spec.family)
    if path.exists():
        raise ModelNotFoundError(
            f"{path.resolve()} is a file, not a model folder",
            fix="pass the folder that holds config.json and the weights",
        )
    if not is_hub_id(spec.name_or_path):
        raise ModelNotFoundError(
            f"no model folder at {path.resolve()}",
            fix=f"check the path, or download a model there: hf download BAAI/bge-reranker-v2-m3 --local-dir {path}",
        )
    # Imported here so that local folders work without huggingface_hub's start-up cost.
    from crossrank.models.download import snapshot

    folder = snapshot(
        spec.name_or_path,
        revision=spec.revision,
        cache_dir=spec.cache_dir,
        allow_pickle=spec.allow_pickle,
        trust_remote_code=spec.trust_remote_code,
    )
    return read_model_info(folder, allow_pickle=spec.allow_pickle, family=spec.family, names=[spec.name_or_path])
