"""Chunking: where a document's windows lie, in token positions (pure functions).

The scorer tokenises a document once, asks ``plan_windows`` for the ``[start, end)`` token ranges
to score, and maps each range back to characters through the tokenizer's offsets
(``window_span``). Windows are token-accurate: every window is at most ``size`` of the model's own
tokens, so a (query, window) pair always fits in ``max_length``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from crossrank.config import Direction

__all__ = ["WindowPlan", "count_windows", "plan_windows", "window_span"]


@dataclass(frozen=True, slots=True)
class WindowPlan:
    """The windows of one document and what was left out.

    Attributes:
        windows: ``[start, end)`` token ranges in document order; one ``(0, 0)`` for an empty document.
        dropped: document tokens that no window covers (cut by a cap).
        needed: windows the whole document would have needed (before ``max_windows``).
    """

    windows: list[tuple[int, int]]
    dropped: int
    needed: int


def count_windows(tokens: int, size: int, overlap: int) -> int:
    """Windows of ``size`` tokens, overlapping by ``overlap``, that cover ``tokens`` tokens.

    >>> count_windows(1000, 400, 50)
    3
    """
    if tokens <= size:
        return 1
    stride = size - overlap
    return 1 + -(-(tokens - size) // stride)


def _cover(tokens: int, size: int, stride: int) -> list[tuple[int, int]]:
    if tokens <= size:
        return [(0, tokens)]
    # Windows start every `stride` tokens; the last one is moved back to end at the last token, so
    # no window is a short scrap (it then overlaps its neighbour by more than the others do).
    starts = [*range(0, tokens - size, stride), tokens - size]
    return [(s, s + size) for s in starts]


def plan_windows(
    tokens: int,
    *,
    size: int,
    overlap: int,
    max_windows: int,
    max_tokens: int | None = None,
    direction: Direction = "right",
) -> WindowPlan:
    """The windows to score for a document of ``tokens`` tokens.

    The document is first cut to ``max_tokens`` and to what ``max_windows`` windows cover;
    ``direction='right'`` keeps its start, ``'left'`` its end. The kept part is then covered by
    windows of ``size`` tokens that start every ``size - overlap`` tokens.

    >>> plan_windows(1000, size=400, overlap=50, max_windows=8).windows
    [(0, 400), (350, 750), (600, 1000)]
    >>> plan_windows(1000, size=400, overlap=50, max_windows=1, direction="left")
    WindowPlan(windows=[(600, 1000)], dropped=600, needed=3)
    """
    if not 0 <= overlap < size:
        raise ValueError(f"overlap {overlap} must be in [0, size {size})")
    stride = size - overlap
    capped = tokens if max_tokens is None else min(tokens, max_tokens)
    kept = min(capped, size + (max_windows - 1) * stride)
    base = 0 if direction == "right" else tokens - kept
    windows = [(base + s, base + e) for s, e in _cover(kept, size, stride)]
    return WindowPlan(windows=windows, dropped=tokens - kept, needed=count_windows(capped, size, overlap))


def window_span(
    offsets: Sequence[tuple[int, int]], start: int, end: int, text_length: int, *, whole: bool
) -> tuple[int, int]:
    """Characters ``[start, end)`` of the text that tokens ``start..end`` were read from.

    ``whole`` (the document was read as one pair, uncut) gives the whole text, leading and
    trailing whitespace included; an empty window gives ``(0, 0)``.

    SentencePiece emits a bare ``▁`` before a piece that has no word-start form (``▁`` ``😍``,
    ``▁`` ``美元``), with offsets that start where that piece starts. When such a ``▁`` ends the
    window and its piece opens the next one, the piece was not read here, so the span stops before it.
    """
    if whole:
        return 0, text_length
    if end <= start:
        return 0, 0
    first, last = offsets[start][0], offsets[end - 1]
    if end < len(offsets) and offsets[end][0] == last[0]:
        return first, max(first, last[0])
    return first, last[1]
