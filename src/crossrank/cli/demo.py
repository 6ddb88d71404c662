"""`crossrank demo`: keyword matching vs the reranker on keyword-trap examples."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from crossrank.cli._common import DeviceOption, DtypeOption, ModelOption, open_reranker, reporting_errors
from crossrank.cli._render import print_demo
from crossrank.tools.demo import pick_language, run_demo

__all__ = ["demo"]


def demo(
    lang: Annotated[
        Literal["zh", "en", "auto"], typer.Option(help="Example language; auto: Chinese if the model reads it.")
    ] = "auto",
    model: ModelOption = None,
    device: DeviceOption = None,
    dtype: DtypeOption = None,
) -> None:
    """Show why a reranker beats keyword matching: "苹果手机" must find the iPhone, not the fruit."""
    with reporting_errors():
        reranker = open_reranker(model=model, device=device, dtype=dtype)
        print_demo(run_demo(reranker, pick_language(reranker) if lang == "auto" else lang))
