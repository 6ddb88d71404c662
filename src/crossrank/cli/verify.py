"""`crossrank verify`: every integrity and format check on a model folder."""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated

import typer

from crossrank.cli._common import Flags, JsonOption, reporting_errors, settings, with_flags
from crossrank.cli._render import print_verify
from crossrank.models.verify import model_folder, verify_model
from crossrank.tools.doctor import EXIT_CODES

__all__ = ["verify"]


@with_flags(("family",))
def verify(
    path: Annotated[
        str, typer.Argument(help="The model folder (with config.json), or the hub id of a downloaded model.")
    ],
    allow_pickle: Annotated[bool, typer.Option(help="Accept pytorch_model.bin (pickle) weights.")] = False,
    as_json: JsonOption = False,
    *,
    flags: Flags,
) -> None:
    """Check a model folder fully: files, formats, sizes, sha256 against the manifest, shapes, tokenizer, and a
    decoder (LLM) reranker's score head (its family's score tokens and the weights they are read from).

    A language model of no known reranker family fails, naming the families (pass --family for a renamed
    fine-tune). Exits 0 when all is ok, 1 on a warning (e.g. no manifest to compare with), 2 when something is
    broken, 3 when there is no model folder to check (no such path, a file, a hub id not downloaded).
    """
    with reporting_errors():
        config = settings(flags)
        folder = model_folder(path, cache_dir=config.cache_dir)
        report = verify_model(folder, allow_pickle=allow_pickle, family=config.family)
    if as_json:
        payload = {
            "path": str(report.path),
            "status": report.status,
            "checks": [dataclasses.asdict(c) for c in report.checks],
        }
        typer.echo(json.dumps(payload, ensure_ascii=False))
    else:
        print_verify(report)
    raise typer.Exit(EXIT_CODES[report.status])
