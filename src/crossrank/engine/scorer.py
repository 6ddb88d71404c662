"""Scorer: rerank requests to float32 logits through tokenizer, chunking, planner and backend, in bounded memory.

Several requests (each a query and its documents, with its own truncation and chunking) are scored
together: the (query, window) pairs of all of them are length-sorted into the same batches, so a
micro-batcher can hand over everything that is queued in one call. A document that fits beside
its query is one pair; a longer one becomes several windows (``ChunkingOptions``) whose scores are
aggregated per document.

Memory stays bounded whatever the input: documents are tokenised a group at a time (at most
``_GROUP`` documents or ``_GROUP_CHARS`` characters), their windows are produced one document at a
time, and pairs are scored as soon as ``_WINDOW`` pairs or ``_WINDOW_TOKENS`` tokens are waiting.
What is kept for the whole call is one float and one character span per window.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from crossrank.backends.base import Backend
from crossrank.config import BatchingOptions, ChunkingOptions, PromptOptions, TruncationOptions
from crossrank.engine.aggregation import aggregate, best_window
from crossrank.engine.chunking import WindowPlan, plan_windows, window_span
from crossrank.engine.planner import plan_batches
from crossrank.engine.tokenizer import EncodedPair, EncodedQuery, PairTokenizer, TokenizedText
from crossrank.errors import InputTooLongError
from crossrank.types import Usage

__all__ = ["RequestScorer", "ScoreRequest", "ScoredRequest", "Scorer", "Work", "plan_work", "sigmoid"]

# Pairs (and their tokens) held at once. Bounds memory for any number or length of documents
# while leaving the planner enough pairs to sort, so padding stays as small as with one global sort.
_WINDOW = 4096
_WINDOW_TOKENS = 4096 * 512
# Documents tokenised in one call (the Rust tokenizer runs them in parallel threads).
_GROUP = 4096
_GROUP_CHARS = 1_000_000


def sigmoid(logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """Logistic function in float64, exact at both tails (no overflow warnings for large |x|)."""
    x = logits.astype(np.float64)
    e = np.exp(-np.abs(x))
    result: npt.NDArray[np.float64] = np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return result


@dataclass(frozen=True, slots=True)
class ScoreRequest:
    """One query and its documents, cut by its own truncation options and split by its own chunking.

    ``use_cache=False`` makes a ``CachedScorer`` score it afresh (and not store it). ``prompt`` holds a decoder
    reranker's instruction (the façade puts the family's default there).
    """

    query: str
    documents: Sequence[str]
    truncation: TruncationOptions
    chunking: ChunkingOptions = field(default_factory=ChunkingOptions)
    use_cache: bool = True
    prompt: PromptOptions = field(default_factory=PromptOptions)


@dataclass(frozen=True, slots=True)
class ScoredRequest:
    """A request's scores, in the request's document order, and its token accounting.

    Attributes:
        logits: float32 ``[documents]``: each document's aggregated raw logit.
        usage: tokens read, cut and windows scored.
        spans: int64 ``[documents, 2]``: character ``[start, end)`` of each document's best window
            (``(0, len)`` for a document read whole).
        chunks: int32 ``[documents]``: windows each document was scored in.
    """

    logits: npt.NDArray[np.float32]
    usage: Usage
    spans: npt.NDArray[np.int64]
    chunks: npt.NDArray[np.int32]


@dataclass(slots=True)
class _Tally:
    total_tokens: int = 0
    truncated_documents: int = 0
    truncated_tokens: int = 0
    chunks: int = 0
    chunked_documents: int = 0
    unreadable_texts: int = 0

    def add_document(self, plan: WindowPlan) -> None:
        self.truncated_documents += plan.dropped > 0
        self.truncated_tokens += plan.dropped
        self.chunks += len(plan.windows)
        self.chunked_documents += len(plan.windows) > 1


@dataclass(slots=True)
class _Request:
    """What one request keeps while its windows are scored: one score and one span per window."""

    request: ScoreRequest
    query: EncodedQuery
    size: int
    overlap: int
    max_windows: int
    scores: list[npt.NDArray[np.float32]] = field(default_factory=list)
    spans: list[list[tuple[int, int]]] = field(default_factory=list)
    tally: _Tally = field(default_factory=_Tally)

    def plan(self, tokens: int, index: int) -> WindowPlan:
        """The windows of document ``index``; refuses a cut when truncation is off."""
        truncation = self.request.truncation
        plan = plan_windows(
            tokens,
            size=self.size,
            overlap=self.overlap,
            max_windows=self.max_windows,
            max_tokens=truncation.max_tokens_per_doc,
            direction=truncation.truncation_direction,
        )
        if plan.dropped and not truncation.truncate:
            raise self._too_long(f"documents[{index}]", tokens)
        return plan

    def _too_long(self, field: str, tokens: int) -> InputTooLongError:
        truncation = self.request.truncation
        covered = self.size + (self.max_windows - 1) * (self.size - self.overlap)
        fix = "pass truncate=true to cut it, or send a shorter text"
        if truncation.max_tokens_per_doc is not None and truncation.max_tokens_per_doc <= covered:
            return InputTooLongError(
                field, tokens, truncation.max_tokens_per_doc, reason="allowed by max_tokens_per_doc", fix=fix
            )
        if self.request.chunking.aggregation.kind == "first":
            return InputTooLongError(
                field,
                tokens,
                self.size,
                reason=f"that fit beside the query in max_length {truncation.max_length}",
                fix=f"{fix}, or use aggregate='max' to score it in windows",
            )
        return InputTooLongError(
            field,
            tokens,
            covered,
            reason=f"that max_chunks_per_doc={self.max_windows} windows of {self.size} tokens cover",
            fix=f"{fix}, or raise max_chunks_per_doc",
        )


def _start(tokenizer: PairTokenizer, request: ScoreRequest) -> _Request:
    truncation = request.truncation
    query = tokenizer.encode_query(request.query, truncation, request.prompt.instruction)
    if query.truncated and (truncation.long_query == "reject" or not truncation.truncate):
        raise InputTooLongError(
            "query",
            query.tokens,
            len(query.ids),
            reason="allowed for a query (query_max_length, default 3/4 of max_length)",
            fix="send a shorter query, raise query_max_length, or allow truncation",
        )
    size, overlap = request.chunking.window(tokenizer.document_room(query, truncation))
    first = request.chunking.aggregation.kind == "first"
    return _Request(request, query, size, overlap, max_windows=1 if first else request.chunking.max_chunks_per_doc)


def _encoded(
    tokenizer: PairTokenizer, requests: Sequence[ScoreRequest], group_chars: int
) -> Iterator[tuple[int, int, TokenizedText]]:
    """(request, document, encoding) in order, tokenised a bounded group at a time."""
    group: list[tuple[int, int]] = []
    chars = 0
    for r, request in enumerate(requests):
        for d, text in enumerate(request.documents):
            group.append((r, d))
            chars += len(text)
            if len(group) >= _GROUP or chars >= group_chars:
                yield from _encode_group(tokenizer, requests, group)
                group, chars = [], 0
    yield from _encode_group(tokenizer, requests, group)


def _encode_group(
    tokenizer: PairTokenizer, requests: Sequence[ScoreRequest], group: list[tuple[int, int]]
) -> Iterator[tuple[int, int, TokenizedText]]:
    if not group:
        return
    encodings = tokenizer.encode_documents([requests[r].documents[d] for r, d in group])
    for (r, d), encoding in zip(group, encodings, strict=True):
        yield r, d, encoding


@dataclass(frozen=True, slots=True)
class Work:
    """What a request costs the model: its windows (query-chunk pairs) and their tokens, special tokens included.

    Attributes:
        windows: pairs the model computes (a document read whole is one).
        tokens: real tokens of those pairs (what ``Usage.total_tokens`` reports once scored, cache hits aside).
        complete: ``False`` when counting stopped at ``stop_above``: the request has at least this much work.
    """

    windows: int
    tokens: int
    complete: bool = True


# Planning stops at a cap one group at a time: smaller groups than scoring's waste less work on a refused request.
_PLAN_GROUP_CHARS = 100_000


def plan_work(tokenizer: PairTokenizer, request: ScoreRequest, *, stop_above: int | None = None) -> Work:
    """The windows and tokens ``Scorer.score`` will compute for ``request``, without running the model.

    Tokenises the query and documents exactly as scoring does (so it costs one tokenisation of the
    request, about 1/100 of the model's time on CPU) and plans each document's windows. With
    ``stop_above``, counting stops once the tokens pass it, so refusing a huge request costs little.
    Safe to call from another thread than the scorer's: the tokenizer is only read (engine/tokenizer.py).

    Raises:
        InputTooLongError: as ``Scorer.score`` would, for a request that refuses cuts.
    """
    state = _start(tokenizer, request)
    per_pair = state.query.overhead
    windows = tokens = 0
    for _, d, encoding in _encoded(tokenizer, [request], _PLAN_GROUP_CHARS):
        plan = state.plan(len(encoding.ids), d)
        windows += len(plan.windows)
        tokens += sum(per_pair + min(e - s, state.size) for s, e in plan.windows)
        if stop_above is not None and tokens > stop_above:
            return Work(windows, tokens, complete=False)
    return Work(windows, tokens)


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
        """Score every document of every request; pairs of all requests share batches.

        Raises:
            InputTooLongError: a query or document is over its limit and its request refuses cuts
                (``long_query='reject'`` or ``truncate=False``); raised before the model runs.
        """
        states = [self._start(request) for request in requests]
        self._check_lengths(states)
        pending: list[tuple[int, int, int, EncodedPair]] = []
        pending_tokens = 0
        for r, d, encoding in self._encoded(requests):
            state = states[r]
            ids = encoding.ids
            plan = state.plan(len(ids), d)
            whole = len(plan.windows) == 1 and not plan.dropped
            offsets = [] if whole else encoding.offsets
            text_length = len(state.request.documents[d])
            state.scores.append(np.empty(len(plan.windows), dtype=np.float32))
            state.spans.append([window_span(offsets, s, e, text_length, whole=whole) for s, e in plan.windows])
            state.tally.add_document(plan)
            state.tally.unreadable_texts += self.tokenizer.unreadable(ids)
            for c, (s, e) in enumerate(plan.windows):
                pair = self.tokenizer.build_pair(state.query, ids[s:e], state.request.truncation, continued=s > 0)
                pending.append((r, d, c, pair))
                pending_tokens += len(pair.ids)
                if len(pending) >= _WINDOW or pending_tokens >= _WINDOW_TOKENS:
                    self._flush(pending, states, batching)
                    pending, pending_tokens = [], 0
        self._flush(pending, states, batching)
        return [self._finish(state) for state in states]

    def _start(self, request: ScoreRequest) -> _Request:
        state = _start(self.tokenizer, request)
        state.tally.unreadable_texts = int(self.tokenizer.unreadable(state.query.ids))
        return state

    def _check_lengths(self, states: Sequence[_Request]) -> None:
        """Refuse too-long documents of requests without truncation before any pair is scored."""
        strict = [state for state in states if not state.request.truncation.truncate]
        for r, d, encoding in self._encoded([state.request for state in strict]):
            strict[r].plan(len(encoding.ids), d)

    def _encoded(self, requests: Sequence[ScoreRequest]) -> Iterator[tuple[int, int, TokenizedText]]:
        return _encoded(self.tokenizer, requests, _GROUP_CHARS)

    def _flush(
        self, pending: list[tuple[int, int, int, EncodedPair]], states: list[_Request], batching: BatchingOptions
    ) -> None:
        if not pending:
            return
        for batch in plan_batches([len(p[3].ids) for p in pending], batching):
            scores = self.backend.forward(self.tokenizer.pad([pending[i][3] for i in batch]))
            for i, score in zip(batch, scores, strict=True):
                r, d, c, _ = pending[i]
                states[r].scores[d][c] = score
        for r, _, _, pair in pending:
            states[r].tally.total_tokens += len(pair.ids)

    @staticmethod
    def _finish(state: _Request) -> ScoredRequest:
        aggregation = state.request.chunking.aggregation
        n = len(state.request.documents)
        logits = np.empty(n, dtype=np.float32)
        spans = np.empty((n, 2), dtype=np.int64)
        chunks = np.empty(n, dtype=np.int32)
        for d, (scores, windows) in enumerate(zip(state.scores, state.spans, strict=True)):
            logits[d] = aggregate(scores, aggregation)
            spans[d] = windows[best_window(scores)]
            chunks[d] = len(windows)
        tally = state.tally
        return ScoredRequest(
            logits=logits,
            usage=Usage(
                total_tokens=tally.total_tokens,
                truncated_documents=tally.truncated_documents,
                truncated_tokens=tally.truncated_tokens,
                truncated_queries=int(state.query.truncated),
                chunks=tally.chunks,
                chunked_documents=tally.chunked_documents,
                unreadable_texts=tally.unreadable_texts,
            ),
            spans=spans,
            chunks=chunks,
        )
