"""The ``eval`` extra's libraries, imported on first use so ``crossrank --help`` works without them."""

from __future__ import annotations

import importlib
from types import ModuleType

from crossrank.errors import ConfigError

__all__ = ["require"]


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` (bm25s, ir_measures, scipy.stats) or say which extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"{purpose} needs {module.split('.', maxsplit=1)[0]}, which is not installed",
            fix="pip install 'crossrank[eval]'",
        ) from None
