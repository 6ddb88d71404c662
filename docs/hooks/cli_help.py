"""MkDocs hook: `<!-- crossrank-help: COMMAND -->` becomes `crossrank COMMAND --help`, rendered at build time.

The CLI reference is the commands' own help (their docstrings and option declarations), so it cannot drift from
the code. A marker naming a command that does not exist fails the build.
"""

from __future__ import annotations

import re
from typing import Any

from typer.testing import CliRunner  # noqa: TID251 (renders the CLI's own help, as the CLI's tests do)

from crossrank.cli import app

_MARKER = re.compile(r"<!-- crossrank-help: ?([a-z-]*) -->")
_WIDTH = 100  # columns the help is wrapped to, as a terminal of that width would show it


def _help(command: str) -> str:
    args = [command, "--help"] if command else ["--help"]
    result = CliRunner().invoke(app, args, prog_name="crossrank", env={"COLUMNS": str(_WIDTH), "NO_COLOR": "1"})
    if result.exit_code != 0:
        raise ValueError(f"`crossrank {command} --help` exited {result.exit_code}: {result.output}")
    return result.output.rstrip()


def on_page_markdown(markdown: str, **_: Any) -> str:
    return _MARKER.sub(lambda match: f"```text\n{_help(match.group(1))}\n```", markdown)
