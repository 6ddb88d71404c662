"""The documentation site covers the whole public surface: every CLI command and every public name.

`mkdocs build --strict` (CI) checks links and that each reference resolves; these checks catch what it cannot:
a new command or public name that no page documents.
"""

from __future__ import annotations

import re
from pathlib import Path

import crossrank
import crossrank.errors
from crossrank.cli import app

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_every_cli_command_has_its_help_in_the_cli_page() -> None:
    documented = set(re.findall(r"<!-- crossrank-help: ?([a-z-]*) -->", (DOCS / "cli.md").read_text()))
    commands = {command.name or command.callback.__name__ for command in app.registered_commands if command.callback}
    assert commands, "no commands registered"
    assert commands | {""} == documented  # "" is `crossrank --help` itself


def test_every_public_name_is_in_the_api_reference() -> None:
    reference = (DOCS / "library" / "reference.md").read_text()
    rendered = set(re.findall(r"^::: crossrank\.(\w+)$", reference, flags=re.MULTILINE))
    assert "errors" in rendered  # the errors module is rendered whole, each class of its __all__
    public = set(crossrank.__all__) - {"__version__"}
    missing = {name for name in public if name not in rendered and name not in crossrank.errors.__all__}
    assert not missing, f"public names without an API reference entry: {sorted(missing)}"
