"""The `crossrank` command line (typer)."""

from __future__ import annotations

from typing import Annotated

import typer

from crossrank._version import __version__
from crossrank.cli.batch import batch
from crossrank.cli.bench import bench
from crossrank.cli.check import check
from crossrank.cli.demo import demo
from crossrank.cli.doctor import doctor
from crossrank.cli.download import download
from crossrank.cli.eval import eval_command
from crossrank.cli.rerank import rerank
from crossrank.cli.serve import serve
from crossrank.cli.verify import verify
from crossrank.cli.worker import worker

__all__ = ["app", "main"]

app = typer.Typer(
    name="crossrank",
    help="Cross-encoder reranking that works out of the box (default model: BAAI/bge-reranker-v2-m3).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts say "[env: CROSSRANK_X]": literal brackets, not markup
    add_completion=False,
)
app.command()(rerank)
app.command()(serve)
app.command()(worker)
app.command()(check)
app.command()(demo)
app.command()(download)
app.command()(verify)
app.command()(doctor)
app.command(name="eval")(eval_command)
app.command()(batch)
app.command()(bench)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"crossrank {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Cross-encoder reranking that works out of the box."""


def main() -> None:
    """Entry point of the `crossrank` script."""
    app()
