"""Result types returned by the façades: frozen, typed, one shape per function."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["RerankResult", "ScoredDocument", "Timing", "Usage"]
__all__ = ["RerankResult", "ScoredDocument", "Span", "Usage"]


@dataclass(frozen=True, slots=True)
class Span:
    """Character offsets ``[start, end)`` in a document: ``document[start:end]`` is the text.

    Offsets count Python characters (code points), so they slice the caller's ``str`` directly.
    """

    start: int
    end: int


@dataclass(frozen=True, slots=True)
class ScoredDocument:
    """One document's place in a ranking.

    Attributes:
        index: position of the document in the caller's list.
        score: the model's raw logit (what ``compute_score`` returns; ranking uses it).
        relevance_score: ``sigmoid(score)`` in [0, 1], computed in float64.
        document: the text, when the caller asked for it back.
        span: the characters the model read in the best-scoring window: the whole document
            ``(0, len)`` when it was read as one pair, else the evidence window (or, when the
            document was cut, the part that was read). ``None`` only where no scorer made it.
        chunks: windows the document was scored in (1 when it fit in one pair).
    """

    index: int
    score: float
    relevance_score: float
    document: str | None = None
    span: Span | None = None
    chunks: int = 1


@dataclass(frozen=True, slots=True)
class Usage:
    """Token accounting of one call.

    Attributes:
        total_tokens: tokens the model read, special tokens included, padding excluded.
        truncated_documents: documents not read whole (``aggregate='first'``, ``max_tokens_per_doc``
            or ``max_chunks_per_doc`` dropped some of their tokens).
        truncated_tokens: document tokens dropped by those cuts (the query's cut is not counted here).
        truncated_queries: 1 per query cut to its cap.
        cached_documents: documents answered from the result cache (the model did not read them).
        chunks: (query, window) pairs the model read; equals the number of documents when none was split.
        chunked_documents: documents split into more than one window.
        unreadable_texts: texts the model read (the query, documents) of which at least 30% of the tokens
            are unknown to its vocabulary (a language it does not read): their scores are guesses.
    """

    total_tokens: int = 0
    truncated_documents: int = 0
    truncated_tokens: int = 0
    truncated_queries: int = 0
    cached_documents: int = 0
    chunks: int = 0
    chunked_documents: int = 0
    unreadable_texts: int = 0


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
