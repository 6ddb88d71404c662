"""Scorer: rerank requests to float32 logits through tokenizer, planner and backend, in bounded memory.

Several requests (each a query and its documents, with its own truncation) are scored together:
their pairs are length-sorted into the same batches, so a micro-batcher can hand over everything
that is queued in one call.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from crossrank.backends.base import Backend
from crossrank.config import BatchingOptions, TruncationOptions
from crossrank.engine.planner import plan_batches
from crossrank.engine.tokenizer import EncodedPair, PairTokenizer
from crossrank.types import Usage

__all__ = ["RequestScorer", "ScoreRequest", "ScoredRequest", "Scorer", "sigmoid"]

# Pairs tokenised and held at once. Bounds memory for any number of documents while leaving the
# planner enough pairs to sort, so padding stays as small as with one global sort.
_WINDOW = 4096


def sigmoid(logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """Logistic function in float64, exact at both tails (no overflow warnings for large |x|)."""
    x = logits.astype(np.float64)
    e = np.exp(-np.abs(x))
    result: npt.NDArray[np.float64] = np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return result


@dataclass(frozen=True, slots=True)
class ScoreRequest:
    """One query and its documents, cut by its own truncation options.

    ``use_cache=False`` makes a ``CachedScorer`` score it afresh (and not store it).
    """

    query: str
    documents: Sequence[str]
    truncation: TruncationOptions
    use_cache: bool = True


@dataclass(frozen=True, slots=True)
class ScoredRequest:
    """Raw logits of a request's documents, in the request's order, and its token accounting."""

    logits: npt.NDArray[np.float32]
    usage: Usage


@dataclass(slots=True)
class _Tally:
    total_tokens: int = 0
    truncated_documents: int = 0
    truncated_tokens: int = 0

    def add(self, pair: EncodedPair) -> None:
        self.total_tokens += len(pair.ids)
        self.truncated_documents += pair.truncated_tokens > 0
        self.truncated_tokens += pair.truncated_tokens


class RequestScorer(Protocol):
    """What the façades and the micro-batcher score with: a ``Scorer``, or a ``CachedScorer`` in front of one."""

    @property
    def tokenizer(self) -> PairTokenizer: ...

    @property
    def backend(self) -> Backend: ...

    def with_backend(self, backend: Backend) -> RequestScorer:
        """The same scorer in front of another backend."""
        ...

    def score(self, requests: Sequence[ScoreRequest], batching: BatchingOptions) -> list[ScoredRequest]:
        """Score every document of every request."""
        ...


class Scorer:
    """Scores requests; one instance is used by one thread at a time."""

    def __init__(self, tokenizer: PairTokenizer, backend: Backend) -> None:
        self.tokenizer = tokenizer
        self.backend = backend

    def with_backend(self, backend: Backend) -> Scorer:
        """The same tokenizer in front of another backend (e.g. one that records metrics)."""
        return Scorer(self.tokenizer, backend)

    def score(self, requests: Sequence[ScoreRequest], batching: BatchingOptions) -> list[ScoredRequest]:
        """Score every document of every request; pairs of all requests share batches."""
        queries = [self.tokenizer.encode_query(r.query, r.truncation) for r in requests]
        logits = [np.empty(len(r.documents), dtype=np.float32) for r in requests]
        tallies = [_Tally() for _ in requests]
        for window in _windows(requests):
            documents = self.tokenizer.encode_documents([requests[r].documents[d] for r, d in window])
            encoded = [
                self.tokenizer.build_pair(queries[r], document.ids, requests[r].truncation)
                for (r, _), document in zip(window, documents, strict=True)
            ]
            for batch in plan_batches([len(p.ids) for p in encoded], batching):
                scores = self.backend.forward(self.tokenizer.pad([encoded[i] for i in batch]))
                for i, score in zip(batch, scores, strict=True):
                    r, d = window[i]
                    logits[r][d] = score
            for (r, _), pair in zip(window, encoded, strict=True):
                tallies[r].add(pair)
        return [
            ScoredRequest(
                logits=logits[r],
                usage=Usage(
                    total_tokens=tally.total_tokens,
                    truncated_documents=tally.truncated_documents,
                    truncated_tokens=tally.truncated_tokens,
                    truncated_queries=int(queries[r].truncated),
                ),
            )
            for r, tally in enumerate(tallies)
        ]


def _windows(requests: Sequence[ScoreRequest]) -> Iterator[list[tuple[int, int]]]:
    """(request, document) index pairs, ``_WINDOW`` at a time."""
    window: list[tuple[int, int]] = []
    for r, request in enumerate(requests):
        for d in range(len(request.documents)):
            window.append((r, d))
            if len(window) == _WINDOW:
                yield window
                window = []
    if window:
        yield window
