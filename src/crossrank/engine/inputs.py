"""The library's checks of what a caller passes in: the wrong type is an ``InputError`` that names the argument."""

from __future__ import annotations

from collections.abc import Sequence

from crossrank.errors import InputError

__all__ = ["check_documents", "check_pairs", "check_text"]


def check_text(value: object, what: str) -> str:
    """``value``, which must be a string (``what`` names it in the error)."""
    if not isinstance(value, str):
        raise InputError(f"{what} must be a string, got {type(value).__name__}")
    return value


def check_documents(documents: object) -> list[str]:
    """A list of strings, each checked (not one string: that is a common slip for one document)."""
    if isinstance(documents, str) or not isinstance(documents, Sequence):
        raise InputError(
            f"documents must be a list of strings, got {type(documents).__name__}",
            fix="wrap a single document in a list: [document]",
        )
    return [check_text(d, f"documents[{i}]") for i, d in enumerate(documents)]


def check_pairs(pairs: object) -> list[tuple[str, str]]:
    """A list of (query, document) pairs of strings."""
    if isinstance(pairs, str) or not isinstance(pairs, Sequence):
        raise InputError(f"pairs must be a list of [query, document] pairs, got {type(pairs).__name__}")
    checked = []
    for i, pair in enumerate(pairs):
        if isinstance(pair, str) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise InputError(f"pairs[{i}] must be a [query, document] pair")
        checked.append((check_text(pair[0], f"pairs[{i}][0]"), check_text(pair[1], f"pairs[{i}][1]")))
    return checked
