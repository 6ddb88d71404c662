"""Fetching models with huggingface_hub (its only importer in crossrank), and what the hub knows about them.

huggingface_hub reads HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE, HF_ENDPOINT and HF_TOKEN itself;
crossrank passes nothing from the environment on its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, RepoFile, constants, get_cached_repo_tree, snapshot_download
from huggingface_hub.errors import (
    CachedRepoTreeNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from crossrank.config import TOKENIZER_INPUTS
from crossrank.errors import IntegrityError, ModelNotFoundError
from crossrank.models.integrity import Manifest, write_manifest

__all__ = [
    "DownloadResult",
    "HubFacts",
    "cached_snapshot",
    "download_model",
    "hub_facts",
    "hub_sizes",
    "inference_patterns",
    "snapshot",
]

# httpx's base error (httpx2's in huggingface_hub 2.x), which HfHubHTTPError extends: a refused or timed-out
# connection reaches us as one, and it is not an OSError. Taken from HfHubHTTPError so either httpx works.
_HTTP_ERRORS: tuple[type[Exception], ...] = tuple(
    base for base in HfHubHTTPError.__bases__ if issubclass(base, Exception) and not issubclass(base, OSError)
)
_TOKENIZER_FILES = ["config.json", *TOKENIZER_INPUTS]


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
    with _hub_errors(repo_id, revision, cache_dir):
        folder = snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache_dir,
            allow_patterns=inference_patterns(allow_pickle=allow_pickle, trust_remote_code=trust_remote_code),
        )
    return Path(str(folder))


@contextmanager
def _hub_errors(
    repo_id: str, revision: str | None, cache_dir: str | None, endpoint: str | None = None
) -> Iterator[None]:
    """Translate huggingface_hub's exceptions into ``ModelNotFoundError`` with the fix.

    huggingface_hub 1.x and 2.x talk HTTP through httpx: a refused connection, a timeout or a DNS failure is
    an httpx ``TransportError``, which is neither an ``OSError`` nor an ``HfHubHTTPError``.
    """
    cache = cache_dir or constants.HF_HUB_CACHE
    download = f"crossrank download {repo_id}" + (f" --revision {revision}" if revision else "")
    try:
        yield
    except LocalEntryNotFoundError as exc:
        offline = " (HF_HUB_OFFLINE is set)" if constants.HF_HUB_OFFLINE else " and the hub could not be reached"
        raise ModelNotFoundError(
            f"{repo_id} is not a local folder, not in the Hugging Face cache at {cache}{offline}",
            fix=f"run `{download}` (or `hf {download.removeprefix('crossrank ')}`) where the hub is reachable "
            "(same HF_HOME), or pass a local model folder",
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
            fix=f"check the network, then run `{download}` again (finished files are kept); or pass a local folder",
        ) from exc
    except _HTTP_ERRORS as exc:  # the connection itself failed (refused, timed out, name not resolved)
        raise ModelNotFoundError(
            f"could not reach the Hugging Face hub at {endpoint or constants.ENDPOINT} to download {repo_id}: "
            f"{type(exc).__name__}: {exc}",
            fix=f"check the network, then run `{download}` again (finished files are kept); or pass a local folder",
        ) from exc


@dataclass(frozen=True, slots=True)
class DownloadResult:
    """Where a download landed, the commit it is, and the manifest written for it."""

    folder: Path
    commit: str
    manifest: Manifest


def download_model(
    repo_id: str,
    *,
    revision: str | None = None,
    local_dir: Path | None = None,
    cache_dir: str | None = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    progress: type[Any] | None = None,
    endpoint: str | None = None,
) -> DownloadResult:
    """Download what inference needs, check it against the hub's sizes and sha256, write the manifest.

    Args:
        repo_id: hub id, e.g. ``BAAI/bge-reranker-v2-m3``.
        revision: branch, tag or commit (default: the main branch).
        local_dir: a plain folder to download into; ``None`` uses the hub cache.
        cache_dir: hub cache folder when ``local_dir`` is ``None``.
        progress: a tqdm-compatible class for the progress bars (the CLI passes a rich one).
        endpoint: the hub's URL (default: huggingface_hub's, i.e. ``HF_ENDPOINT``).

    A transfer cut by the network resumes where it stopped (HTTP range requests); files that
    finished in an earlier run are not fetched again.
    """
    api = HfApi(endpoint=endpoint)
    with _hub_errors(repo_id, revision, cache_dir, endpoint):
        commit = str(api.model_info(repo_id, revision=revision or "main").sha)
        folder = Path(
            snapshot_download(
                repo_id,
                # A cache download keeps the branch name so later offline loads find it by name.
                revision=commit if local_dir is not None else (revision or "main"),
                cache_dir=cache_dir,
                local_dir=local_dir,
                allow_patterns=inference_patterns(allow_pickle=allow_pickle, trust_remote_code=trust_remote_code),
                tqdm_class=progress,
                endpoint=endpoint,
            )
        )
        # The listing gives every file's size and each large (LFS) file's sha256: what the bytes must be.
        expected = {
            entry.path: (int(entry.size), entry.lfs.sha256 if entry.lfs is not None else None)
            for entry in api.list_repo_tree(repo_id, revision=commit, recursive=True)
            if isinstance(entry, RepoFile) and (folder / entry.path).is_file()
        }
    manifest = write_manifest(folder, repo_id=repo_id, revision=revision, commit=commit)
    problems = [
        f"{name}: {manifest.files[name][0]:,} bytes, sha256 {manifest.files[name][1][:12]}…, but the hub lists "
        f"{size:,} bytes" + (f", sha256 {sha[:12]}…" if sha else "")
        for name, (size, sha) in sorted(expected.items())
        if name in manifest.files and (manifest.files[name][0] != size or (sha and manifest.files[name][1] != sha))
    ]
    if problems:
        (folder / ".crossrank-manifest.json").unlink(missing_ok=True)
        raise IntegrityError(
            f"the download of {repo_id} differs from what the hub lists: {'; '.join(problems)}",
            fix=f"download it again with crossrank download {repo_id} (a proxy or disk may be corrupting data)",
        )
    return DownloadResult(folder=folder, commit=commit, manifest=manifest)


def hub_sizes(
    repo_id: str, commit: str, folder: Path, *, cache_dir: str | None = None, local_dir: Path | None = None
) -> dict[str, int] | None:
    """File sizes the hub listed for ``commit``, as huggingface_hub cached them at the last download.

    ``None`` when no listing was cached (the folder was not made by huggingface_hub). No network access.
    """
    try:
        entries = get_cached_repo_tree(repo_id, revision=commit, cache_dir=cache_dir, local_dir=local_dir)
    except (CachedRepoTreeNotFoundError, OSError, ValueError):
        return None
    return {entry.path: int(entry.size) for entry in entries if (folder / entry.path).exists()}


@dataclass(frozen=True, slots=True)
class HubFacts:
    """How huggingface_hub is set up here (all from its own reading of the environment)."""

    cache_dir: Path
    offline: bool
    endpoint: str
    version: str


def hub_facts() -> HubFacts:
    """Cache folder, offline mode and endpoint as huggingface_hub sees them."""
    from huggingface_hub import __version__

    return HubFacts(
        cache_dir=Path(constants.HF_HUB_CACHE),
        offline=bool(constants.HF_HUB_OFFLINE),
        endpoint=str(constants.ENDPOINT),
        version=str(__version__),
    )


def cached_snapshot(repo_id: str, *, revision: str | None = None, cache_dir: str | None = None) -> Path | None:
    """The cached folder of ``repo_id`` if it was downloaded before; never touches the network."""
    try:
        folder = snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=True,
            allow_patterns=inference_patterns(allow_pickle=False, trust_remote_code=False),
        )
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError):
        return None
    return Path(str(folder))
