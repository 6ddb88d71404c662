"""Help texts in CLI words: ``QUERY [DOCUMENTS]...`` and ``--top-n INTEGER``, not ``{query}`` and ``<list[str]>``.

typer (0.2x) shows an argument as ``{name}`` and every value as its Python type. ``CliCommand`` (passed as
``cls`` to ``app.command``) gives its arguments and options the metavars a shell user expects; typer versions
without those hooks simply keep their own rendering.
"""

from __future__ import annotations

import re
import types
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import typer.core

__all__ = ["CliCommand", "cli_text", "cli_word"]

_WORDS: dict[Any, str] = {str: "TEXT", int: "INTEGER", float: "NUMBER", Path: "PATH", bool: "BOOLEAN"}


def cli_word(annotation: Any) -> str | None:
    """The metavar of a value of Python type ``annotation`` (``list[str]`` -> ``TEXT``), or ``None`` if unknown."""
    if get_origin(annotation) in (list, Union, types.UnionType):
        plain = [arg for arg in get_args(annotation) if arg is not type(None)]
        return cli_word(plain[0]) if len(plain) == 1 else None
    return _WORDS.get(annotation)


class _Argument(typer.core.TyperArgument):
    """An argument shown as ``QUERY`` (required), ``[DOCUMENTS]...`` (optional, repeatable)."""

    def _upper(self) -> str:
        return (self.metavar or self.name or "").upper()

    def _usage_display_name(self) -> str:
        name = self._upper() if self.required else f"[{self._upper()}]"
        return name + ("..." if self.nargs != 1 else "")

    def _rich_display_name(self) -> str:
        return self._upper() + ("..." if self.nargs != 1 else "")

    def display_type_rich(self, ctx: Any) -> str | None:
        return None  # the help says what it is; the name already stands for the value


class _Option(typer.core.TyperOption):
    """An option whose value is shown as ``TEXT``, ``INTEGER``, ``PATH`` or ``[a|b|c]``."""

    def display_type_rich(self, ctx: Any) -> str | None:
        if self.metavar is not None or self.is_flag:
            return super().display_type_rich(ctx)
        descriptor = getattr(self, "type_descriptor", None)
        if descriptor is None:
            return super().display_type_rich(ctx)
        if getattr(descriptor, "is_choice", False) and getattr(descriptor, "choices", None):
            return "[" + "|".join(str(choice) for choice in descriptor.choices) + "]"
        if getattr(descriptor, "is_path", False):
            return "PATH"
        return cli_word(getattr(descriptor, "annotation", None)) or super().display_type_rich(ctx)


class CliCommand(typer.core.TyperCommand):
    """A typer command whose help and usage line use CLI words for its arguments and options."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            # typer builds the parameters itself; re-class them for their rendering only (no state is added).
            if type(param) is typer.core.TyperArgument:
                param.__class__ = _Argument
            elif type(param) is typer.core.TyperOption:
                param.__class__ = _Option


# Errors are written once for the library and the CLI; the library's words are keyword arguments
# (backend='onnx', max_chunks_per_doc), the CLI's are its flags (--backend onnx, --max-chunks-per-doc).
_ASSIGNMENT = re.compile(r"(?<![\w./-])([a-z][a-z0-9_]*)=(?:'([^'\s]*)'|\"([^\"\s]*)\"|([\w.:/-]+))")
_KEYWORD = re.compile(r"(?<![\w./-])([a-z][a-z0-9]*(?:_[a-z0-9]+)+)(?![\w/-]|\.\w)")
_QUOTED = re.compile(r"'([\w.:/-]+)'")


def cli_text(text: str, names: frozenset[str]) -> str:
    """``text`` with the keyword arguments in ``names`` written as flags: ``backend='onnx'`` -> ``--backend onnx``,
    ``truncate=True`` -> ``--truncate``, ``max_chunks_per_doc`` -> ``--max-chunks-per-doc``; other words stay."""

    def assignment(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in names:
            return match.group(0)
        flag = name.replace("_", "-")
        value = next(group for group in match.groups()[1:] if group is not None)
        if value.lower() in ("true", "false"):
            return f"--{flag}" if value.lower() == "true" else f"--no-{flag}"
        return f"--{flag} {value}"

    rendered = _ASSIGNMENT.sub(assignment, text)
    if rendered != text:  # "--device auto, 'cpu' or 'cuda'": the alternatives lose their Python quotes too
        rendered = _QUOTED.sub(r"\1", rendered)
        rendered = re.sub(r"(--[\w-]+) \(\1\)", r"\1", rendered)  # "--allow-pickle (--allow-pickle)"
    return _KEYWORD.sub(lambda m: f"--{m.group(1).replace('_', '-')}" if m.group(1) in names else m.group(0), rendered)
