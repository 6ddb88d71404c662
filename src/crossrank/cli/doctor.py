"""`crossrank doctor`: diagnose the install, the machine and the model, each finding with its fix."""

from __future__ import annotations

import json
import os
from typing import Annotated

import typer

from crossrank.cli._common import Flags, JsonOption, reporting_errors, settings, with_flags
from crossrank.cli._render import print_doctor
from crossrank.tools.doctor import run_doctor

__all__ = ["doctor"]


@with_flags(("model", "device", "dtype", "family"))
def doctor(
    smoke: Annotated[bool, typer.Option(help="Load the model and score two pairs at the end.")] = True,
    as_json: JsonOption = False,
    *,
    flags: Flags,
) -> None:
    """Check versions, CUDA and GPUs (memory, other processes), CPU, threads, conflicting installs, cache, disk, the
    model folder (and how it is scored: its family, a decoder reranker's score head), and run a live smoke test.

    Exits 0 when everything is ok, 1 when the worst finding is a warning, 2 when something fails.
    """
    with reporting_errors():
        config = settings(flags)
        report = run_doctor(
            model=config.model,
            environ=dict(os.environ),
            revision=config.revision,
            cache_dir=config.cache_dir,
            device=config.device,
            dtype=config.dtype,
            fallback=config.fallback,
            num_threads=config.num_threads,
            family=config.family,
            smoke=smoke,
        )
    if as_json:
        typer.echo(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        print_doctor(report)
    raise typer.Exit(report.exit_code)
