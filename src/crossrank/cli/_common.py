"""What every command shares: model options, building the Reranker from settings, exit codes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

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
    "BackendOption",
    "DeviceOption",
    "DtypeOption",
    "JsonOption",
    "MaxLengthOption",
    "ModelOption",
    "QuantizeOption",
    "exit_code",
    "open_reranker",
    "reporting_errors",
    "settings",
]

ModelOption = Annotated[
    str | None, typer.Option("--model", "-m", help="Hub id or local folder [env: CROSSRANK_MODEL].", show_default=False)
]
DeviceOption = Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N [env: CROSSRANK_DEVICE].")]
DtypeOption = Annotated[str | None, typer.Option(help="auto, float32, float16 or bfloat16 [env: CROSSRANK_DTYPE].")]
BackendOption = Annotated[
    str | None, typer.Option(help="torch, or onnx (onnxruntime; exported on first use) [env: CROSSRANK_BACKEND].")
]
QuantizeOption = Annotated[
    str | None, typer.Option(help="none, or int8 (with --backend onnx, CPU) [env: CROSSRANK_QUANTIZE].")
]
MaxLengthOption = Annotated[
    int | None, typer.Option("--max-length", help="Tokens per pair [env: CROSSRANK_MAX_LENGTH, default 512].")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

# One table from error class to exit code; the first matching class wins.
_EXIT_CODES: tuple[tuple[type[CrossrankError], int], ...] = (
    (ConfigError, 2),
    (InputError, 2),
    (ModelError, 3),
    (BackendError, 4),
    (CrossrankError, 1),
)


def exit_code(error: CrossrankError) -> int:
    """The process exit code for ``error``."""
    return next(code for cls, code in _EXIT_CODES if isinstance(error, cls))


def settings() -> Settings:
    """``CROSSRANK_*`` settings, with a bad variable reported as a ConfigError."""
    return _settings()


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(f"CROSSRANK_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"bad environment setting: {problems}", fix="correct or unset that variable") from None


@contextmanager
def reporting_errors() -> Iterator[None]:
    """Turn crossrank errors into a message, a fix and the exit code of the table above."""
    try:
        yield
    except CrossrankError as error:
        print_error(error)
        raise typer.Exit(exit_code(error)) from None


def open_reranker(**overrides: Any) -> Reranker:
    """A Reranker from ``CROSSRANK_*`` settings with the command's flags on top."""
    return Reranker(**_settings().reranker_kwargs(**overrides))
