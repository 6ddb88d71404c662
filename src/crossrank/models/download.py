"""HubDownloader: fetch a model snapshot with huggingface_hub (its only importer in crossrank).

huggingface_hub reads HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE, HF_ENDPOINT and HF_TOKEN itself;
crossrank passes nothing from the environment on its own.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import constants, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from crossrank.errors import ModelNotFoundError

__all__ = ["inference_patterns", "snapshot"]

_TOKENIZER_FILES = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "sentencepiece.bpe.model",
    "spiece.model",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
]


def inference_patterns(*, allow_pickle: bool, trust_remote_code: bool) -> list[str]:
    """The files inference needs: config, tokenizer, weights; never optimizer states or other formats."""
    patterns = [*_TOKENIZER_FILES, "*.safetensors", "model.safetensors.index.json"]
    if allow_pickle:
        patterns += ["pytorch_model*.bin", "pytorch_model.bin.index.json"]
    if trust_remote_code:
        patterns.append("*.py")
    return patterns


def snapshot(
    repo_id: str,
    *,
    revision: str | None,
    cache_dir: str | None,
    allow_pickle: bool,
    trust_remote_code: bool,
) -> Path:
    """Return the local folder of ``repo_id`` at ``revision``, downloading what is missing."""
    cache = cache_dir or constants.HF_HUB_CACHE
    download = f"hf download {repo_id}" + (f" --revision {revision}" if revision else "")
    try:
        folder = snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache_dir,
            allow_patterns=inference_patterns(allow_pickle=allow_pickle, trust_remote_code=trust_remote_code),
        )
    except LocalEntryNotFoundError as exc:
        offline = " (HF_HUB_OFFLINE is set)" if constants.HF_HUB_OFFLINE else " and the hub could not be reached"
        raise ModelNotFoundError(
            f"{repo_id} is not a local folder, not in the Hugging Face cache at {cache}{offline}",
            fix=f"run `{download}` where the hub is reachable (same HF_HOME), or pass a local model folder",
        ) from exc
    except GatedRepoError as exc:
        raise ModelNotFoundError(
            f"{repo_id} is gated on the hub and this machine is not allowed to read it",
            fix="accept its terms on huggingface.co and set HF_TOKEN, or pass a local model folder",
        ) from exc
    except RevisionNotFoundError as exc:
        raise ModelNotFoundError(
            f"{repo_id} has no revision {revision!r}", fix="pass an existing branch, tag or commit"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise ModelNotFoundError(
            f"{repo_id} is neither a local folder nor a model on the hub",
            fix="check the spelling (e.g. BAAI/bge-reranker-v2-m3) or pass the path of a local folder",
        ) from exc
    except (HfHubHTTPError, OSError) as exc:
        raise ModelNotFoundError(
            f"downloading {repo_id} failed: {exc}",
            fix=f"check the network, then run `{download}`; or pass a local model folder",
        ) from exc
    return Path(str(folder))
