"""The `crossrank` command line (typer)."""

from __future__ import annotations

from typing import Annotated

import typer

from crossrank._version import __version__
from crossrank.cli._help import CliCommand
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

_HELP = """Cross-encoder reranking that works out of the box.

The default model, BAAI/bge-reranker-v2-m3 (2.3 GB), is downloaded from the Hugging Face hub on first use, or
ahead of time with `crossrank download BAAI/bge-reranker-v2-m3`; pick another with --model (a hub id or a
local folder).

Examples:

\b
  crossrank rerank "what is a panda?" "The giant panda is a bear." "Pandas is a Python library."
  crossrank rerank "query" --file docs.txt --top-n 5 --json
  crossrank serve --port 8000        (needs: pip install 'crossrank[server]')

Exit codes: 0 ok, 1 failed, 2 bad option or input, 3 model not found or unusable, 4 runtime failure,
5 serve: address in use. `crossrank COMMAND --help` describes each command."""

app = typer.Typer(
    name="crossrank",
    help=_HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts say "[env: CROSSRANK_X]": literal brackets, not markup
    add_completion=False,
)
app.command(cls=CliCommand)(rerank)
app.command(cls=CliCommand)(serve)
app.command(cls=CliCommand)(worker)
app.command(cls=CliCommand)(check)
app.command(cls=CliCommand)(demo)
app.command(cls=CliCommand)(download)
app.command(cls=CliCommand)(verify)
app.command(cls=CliCommand)(doctor)
app.command(name="eval", cls=CliCommand)(eval_command)
app.command(cls=CliCommand)(batch)
app.command(cls=CliCommand)(bench)


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
    """Cross-encoder reranking that works out of the box (the help is ``_HELP``)."""


def main() -> None:
    """Entry point of the `crossrank` script."""
    app()
