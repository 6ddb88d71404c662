"""`crossrank download`: fetch what inference needs, verify it against the hub, record a manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from crossrank.cli._common import reporting_errors, settings
from crossrank.cli._render import RichDownloadBar, print_download, print_note
from crossrank.models.download import download_model
from crossrank.models.info import read_model_info

__all__ = ["download"]


def download(
    model: Annotated[str, typer.Argument(help="Hub id, e.g. BAAI/bge-reranker-v2-m3.")],
    revision: Annotated[str | None, typer.Option(help="Branch, tag or commit [default: main].")] = None,
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Download into this folder instead of the hub cache.")
    ] = None,
    allow_pickle: Annotated[bool, typer.Option(help="Also fetch pytorch_model.bin (pickle) weights.")] = False,
) -> None:
    """Download MODEL's config, tokenizer and safetensors weights (interrupted transfers resume).

    Every file is checked against the sizes and sha256 the hub lists, then a manifest
    (.crossrank-manifest.json: revision, commit, sizes, sha256) is written for `crossrank verify`.

    Exit codes: 0 downloaded, 2 bad option, 3 not found, unreachable (no network) or not a usable reranker.
    """
    with reporting_errors():
        result = download_model(
            model,
            revision=revision,
            local_dir=directory,
            cache_dir=settings().cache_dir,
            allow_pickle=allow_pickle,
            progress=RichDownloadBar,
        )
        print_download(result)
        read_model_info(result.folder, allow_pickle=allow_pickle)  # tell now if it cannot rerank
    if directory is None:
        print_note(f"load it with --model {model} (or Reranker({model!r}))")
