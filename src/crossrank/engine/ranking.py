"""Ranking: logits of one request's documents to sorted ScoredDocuments (pure)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from crossrank.engine.scorer import sigmoid
from crossrank.types import ScoredDocument, Span

__all__ = ["rank"]


def rank(
    logits: npt.NDArray[np.float32],
    documents: Sequence[str],
    *,
    top_n: int | None,
    return_documents: bool,
    min_score: float | None = None,
    spans: npt.NDArray[np.int64] | None = None,
    chunks: npt.NDArray[np.int32] | None = None,
) -> list[ScoredDocument]:
    """Documents by descending logit; equal logits keep the caller's order (stable sort).

    ``min_score`` drops documents whose ``relevance_score`` is below it, before ``top_n`` is applied.
    ``spans`` and ``chunks`` (from ``ScoredRequest``) give each document its evidence span and window count.
    """
    relevance = sigmoid(logits)
    order = sorted(range(len(documents)), key=lambda i: -float(logits[i]))
    if min_score is not None:
        order = [i for i in order if relevance[i] >= min_score]
    order = order[:top_n]
    return [
        ScoredDocument(
            index=i,
            score=float(logits[i]),
            relevance_score=float(relevance[i]),
            document=documents[i] if return_documents else None,
            span=None if spans is None else Span(int(spans[i, 0]), int(spans[i, 1])),
            chunks=1 if chunks is None else int(chunks[i]),
        )
        for i in order
    ]
