"""`crossrank check`: the smoke test for a freshly deployed box."""

from __future__ import annotations

import dataclasses
import json

import typer

from crossrank.cli._common import (
    MODEL_FLAGS,
    SCORING_FLAGS,
    Flags,
    JsonOption,
    open_reranker,
    reporting_errors,
    with_flags,
)
from crossrank.cli._render import print_check, print_note
from crossrank.tools.check import run_check

__all__ = ["check"]


@with_flags(MODEL_FLAGS, SCORING_FLAGS)
def check(
    as_json: JsonOption = False,
    *,
    flags: Flags,
) -> None:
    """Load the model, check it ranks relevant above irrelevant (zh, en), report device and latency.

    Exits 0 when every check passes, 1 when one fails, 2-4 when the model cannot be loaded.
    """
    with reporting_errors():
        report = run_check(open_reranker(flags))
    if as_json:
        payload = {**dataclasses.asdict(report), "passed": report.passed, "fix": report.fix}
        typer.echo(json.dumps(payload, ensure_ascii=False))
    else:
        print_check(report)
        if report.fix:
            print_note(report.fix)
    if not report.passed:
        raise typer.Exit(1)
