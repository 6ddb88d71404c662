"""`crossrank demo`: keyword matching vs the reranker on keyword-trap examples."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from crossrank.cli._common import MODEL_FLAGS, Flags, open_reranker, reporting_errors, with_flags
from crossrank.cli._render import print_demo
from crossrank.tools.demo import pick_language, run_demo

__all__ = ["demo"]


@with_flags(MODEL_FLAGS)
def demo(
    lang: Annotated[
        Literal["zh", "en", "auto"], typer.Option(help="Example language; auto: Chinese if the model reads it.")
    ] = "auto",
    *,
    flags: Flags,
) -> None:
    """Show why a reranker beats keyword matching: "苹果手机" must find the iPhone, not the fruit."""
    with reporting_errors():
        reranker = open_reranker(flags)
        print_demo(run_demo(reranker, pick_language(reranker) if lang == "auto" else lang))
