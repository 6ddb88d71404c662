"""Aggregation: a document's window scores to its score, and which window is the evidence (pure)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from crossrank.config import Aggregation

__all__ = ["aggregate", "best_window"]


def aggregate(scores: npt.NDArray[np.float32], aggregation: Aggregation) -> float:
    """One score from a document's window logits (in document order).

    Means are taken in float64; a single window gives its own logit bit for bit, so a document
    that fits in one pair scores exactly as without chunking.

    >>> aggregate(np.array([1.0, 4.0, 2.0], dtype=np.float32), Aggregation.parse("topk_mean:2"))
    3.0
    """
    if scores.size == 0:
        raise ValueError("a document has at least one window")
    if aggregation.kind == "max":
        return float(scores.max())
    if aggregation.kind == "first":
        return float(scores[0])
    if aggregation.kind == "mean":
        return float(scores.astype(np.float64).mean())
    top = np.sort(scores)[::-1][: aggregation.k]
    return float(top.astype(np.float64).mean())


def best_window(scores: npt.NDArray[np.float32]) -> int:
    """Index of the highest-scoring window (the first of equals)."""
    return int(np.argmax(scores))
