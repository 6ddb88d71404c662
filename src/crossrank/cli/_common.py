"""What every command shares: model options, building the Reranker from settings, exit codes."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import UnionType
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

import typer
from pydantic import ValidationError

from crossrank.cli._render import print_error
from crossrank.errors import (
    BackendError,
    ConfigError,
    CrossrankError,
    InputError,
    ModelError,
)
from crossrank.reranker import Reranker
from crossrank.settings import Settings

__all__ = [
    "BATCH_FLAGS",
    "CACHE_FLAGS",
    "EXIT_CODES_HELP",
    "MODEL_FLAGS",
    "SCORING_FLAGS",
    "AddressInUseError",
    "Flags",
    "JsonOption",
    "exit_code",
    "open_reranker",
    "reporting_errors",
    "settings",
    "with_flags",
]

# The reranker's flags, by group; each is the Settings field (and Reranker keyword) of that name.
MODEL_FLAGS = (
    "model",
    "revision",
    "backend",
    "device",
    "dtype",
    "quantize",
    "num_threads",
    "family",
    "cutoff_layer",
    "trust_remote_code",
)
SCORING_FLAGS = (
    "max_length",
    "query_max_length",
    "truncation_direction",
    "max_tokens_per_doc",
    "truncate",
    "long_query",
    "aggregate",
    "chunk_tokens",
    "overlap_tokens",
    "max_chunks_per_doc",
    "instruction",
)
BATCH_FLAGS = ("max_batch_tokens", "max_batch_size")
CACHE_FLAGS = ("cache_size", "cache_url", "cache_ttl")
_SHORT = {"model": "-m"}

Flags = dict[str, Any]
"""The values of a command's shared flags that were given, by Settings field name."""
_F = TypeVar("_F", bound=Callable[..., Any])

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


class AddressInUseError(CrossrankError):
    """``crossrank serve`` cannot listen: the address is taken by another process or not this machine's."""


# One table from error class to exit code; the first matching class wins.
_EXIT_CODES: tuple[tuple[type[CrossrankError], int], ...] = (
    (ConfigError, 2),
    (InputError, 2),
    (ModelError, 3),
    (BackendError, 4),
    (AddressInUseError, 5),
    (CrossrankError, 1),
)
EXIT_CODES_HELP = (
    "Exit codes: 0 ok, 1 failed, 2 bad option or input, 3 model not found or unusable, 4 runtime failure, "
    "5 serve: address in use."
)


def exit_code(error: CrossrankError) -> int:
    """The process exit code for ``error``."""
    return next(code for cls, code in _EXIT_CODES if isinstance(error, cls))


def settings(flags: Flags | None = None) -> Settings:
    """``CROSSRANK_*`` settings with the command's ``flags`` on top; a bad value is a ConfigError naming it."""
    try:
        config = Settings()
    except ValidationError as exc:
        raise ConfigError(f"bad environment setting: {_problems(exc)}", fix="correct or unset that variable") from None
    try:
        return config.with_flags(**(flags or {}))
    except ValidationError as exc:
        raise ConfigError(f"bad option: {_problems(exc)}", fix="correct that flag (or its variable)") from None


def _problems(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        name = "_".join(map(str, error["loc"]))
        problems.append(f"--{name.replace('_', '-')} / CROSSRANK_{name.upper()}: {error['msg']}")
    return "; ".join(problems)


def _cli_type(annotation: Any) -> type:
    """``int`` for ``int | None`` and the like; ``str`` for choices (``Literal``), which Settings checks."""
    plain = (
        [t for t in get_args(annotation) if t is not type(None)]
        if get_origin(annotation) in (Union, UnionType)
        else [annotation]
    )
    return plain[0] if len(plain) == 1 and plain[0] in (bool, int, float) else str


def _flag(name: str) -> inspect.Parameter:
    """The typer option of Settings field ``name``: its type, its description as help, its variable and default."""
    field = Settings.model_fields[name]
    kind = _cli_type(field.annotation)
    default = "" if field.default is None else f", default {field.default}"
    declarations = [f"--{name.replace('_', '-')}"] + ([_SHORT[name]] if name in _SHORT else [])
    if kind is bool:
        declarations = [f"{declarations[0]}/--no-{name.replace('_', '-')}"]
    help_text = f"{field.description} [env: CROSSRANK_{name.upper()}{default}]"
    option = typer.Option(*declarations, help=help_text, show_default=False)
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[kind | None, option]
    )


def with_flags(*groups: tuple[str, ...]) -> Callable[[_F], _F]:
    """Give a command the shared flags of ``groups`` (e.g. ``MODEL_FLAGS``): the values given arrive in its
    ``flags`` parameter, so every command declares, names, documents and validates them the same way."""
    names = [name for group in groups for name in group]

    def decorate(command: _F) -> _F:
        own = inspect.signature(command, eval_str=True)
        params = [p for p in own.parameters.values() if p.name != "flags"]

        @functools.wraps(command)
        def wrapper(**values: Any) -> Any:
            given = {name: value for name in names if (value := values.pop(name, None)) is not None}
            return command(**values, flags=given)

        wrapper.__signature__ = own.replace(parameters=[*params, *map(_flag, names)])  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in wrapper.__signature__.parameters.values()}  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


@contextmanager
def reporting_errors() -> Iterator[None]:
    """Turn crossrank errors into a message, a fix and the exit code of the table above."""
    try:
        yield
    except CrossrankError as error:
        print_error(error)
        raise typer.Exit(exit_code(error)) from None


def open_reranker(flags: Flags) -> Reranker:
    """A Reranker from ``CROSSRANK_*`` settings with the command's flags on top."""
    return Reranker.from_options(settings(flags).reranker_options())
