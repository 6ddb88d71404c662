"""Result types returned by the façades: frozen, typed, one shape per function."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["RerankResult", "ScoredDocument", "Timing", "Usage"]


@dataclass(frozen=True, slots=True)
class ScoredDocument:
    """One document's place in a ranking.

    Attributes:
        index: position of the document in the caller's list.
        score: the model's raw logit (what ``compute_score`` returns; ranking uses it).
        relevance_score: ``sigmoid(score)`` in [0, 1], computed in float64.
        document: the text, when the caller asked for it back.
    """

    index: int
    score: float
    relevance_score: float
    document: str | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    """Token accounting of one call.

    Attributes:
        total_tokens: tokens the model read, special tokens included, padding excluded.
        truncated_documents: documents cut to fit ``max_length``.
        truncated_tokens: document tokens dropped by that cut (the query's cut is not counted here).
        truncated_queries: 1 per query cut to its cap.
        cached_documents: documents answered from the result cache (the model did not read them).
    """

    total_tokens: int = 0
    truncated_documents: int = 0
    truncated_tokens: int = 0
    truncated_queries: int = 0
    cached_documents: int = 0


@dataclass(frozen=True, slots=True)
class Timing:
    """Where a queued call's time went (``AsyncReranker`` and the server).

    Attributes:
        queue_seconds: waiting for the worker, from submit until scoring started.
        inference_seconds: the scoring call it shared with the calls batched with it.
    """

    queue_seconds: float
    inference_seconds: float


@dataclass(frozen=True, slots=True)
class RerankResult:
    """Documents ordered by relevance (highest first), ties kept in the caller's order.

    ``timing`` is set by ``AsyncReranker`` (queued calls), ``None`` for direct calls.
    """

    results: list[ScoredDocument] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    timing: Timing | None = None
