"""Scorer: text pairs to float32 logits through tokenizer, planner and backend, in bounded memory."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from crossrank.backends.base import Backend
from crossrank.config import BatchingOptions, TruncationOptions
from crossrank.engine.planner import plan_batches
from crossrank.engine.tokenizer import EncodedPair, EncodedQuery, PairTokenizer
from crossrank.types import Usage

__all__ = ["Scorer", "sigmoid"]

# Pairs tokenised and held at once. Bounds memory for any number of documents while leaving the
# planner enough pairs to sort, so padding stays as small as with one global sort.
_WINDOW = 4096


def sigmoid(logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """Logistic function in float64, exact at both tails (no overflow warnings for large |x|)."""
    x = logits.astype(np.float64)
    e = np.exp(-np.abs(x))
    result: npt.NDArray[np.float64] = np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return result


class Scorer:
    """Scores (query, document) pairs; one instance is used by one thread at a time."""

    def __init__(self, tokenizer: PairTokenizer, backend: Backend) -> None:
        self.tokenizer = tokenizer
        self.backend = backend

    def score(
        self, pairs: Sequence[tuple[str, str]], *, truncation: TruncationOptions, batching: BatchingOptions
    ) -> tuple[npt.NDArray[np.float32], Usage]:
        """Raw logits in the order of ``pairs``, and the token accounting."""
        logits = np.empty(len(pairs), dtype=np.float32)
        queries: dict[str, EncodedQuery] = {}
        total = truncated_docs = truncated_tokens = 0
        for start in range(0, len(pairs), _WINDOW):
            window = pairs[start : start + _WINDOW]
            for query, _ in window:
                if query not in queries:
                    queries[query] = self.tokenizer.encode_query(query, truncation)
            documents = self.tokenizer.encode_documents([document for _, document in window])
            encoded = [
                self.tokenizer.build_pair(queries[query], document.ids, truncation)
                for (query, _), document in zip(window, documents, strict=True)
            ]
            for batch in plan_batches([len(p.ids) for p in encoded], batching):
                members: list[EncodedPair] = [encoded[i] for i in batch]
                logits[[start + i for i in batch]] = self.backend.forward(self.tokenizer.pad(members))
            total += sum(len(p.ids) for p in encoded)
            truncated_docs += sum(1 for p in encoded if p.truncated_tokens)
            truncated_tokens += sum(p.truncated_tokens for p in encoded)
        usage = Usage(
            total_tokens=total,
            truncated_documents=truncated_docs,
            truncated_tokens=truncated_tokens,
            truncated_queries=sum(1 for q in queries.values() if q.truncated),
        )
        return logits, usage
