"""Batch rows: input rows checked into jobs, jobs scored through the façade, results to output rows (pure).

An input row is ``{"id", "query", "documents": [...]}`` (each document a string or ``{"text": ...}``)
or a pair row ``{"id", "query", "document"}``. Every input row gives one output row::

    {"id": "q1", "results": [{"index": 0, "score": -1.2, "relevance_score": 0.23, "rank": 2}, ...]}

with ``results`` in the input's document order (a pair row has one entry). ``score`` is the raw
logit, ``relevance_score`` its sigmoid, ``rank`` the 1-based place by descending score (equal
scores keep the input order), exactly as ``Reranker.rerank`` orders them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from crossrank.engine.ranking import rank
from crossrank.reranker import Reranker
from crossrank.types import ScoredDocument

__all__ = ["BadRow", "Job", "bad_row_record", "output_row", "output_schema", "parse_row", "process", "score_jobs"]


@dataclass(frozen=True, slots=True)
class Job:
    """A checked input row: its id (as a string), query and documents, and where it came from."""

    line: int
    id: str
    query: str
    documents: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class BadRow:
    """An input row that cannot be scored, with the reason (written to the errors file)."""

    line: int
    id: str | None
    reason: str


def _document(value: object, where: str) -> str:
    if isinstance(value, dict):
        value = value.get("text")
    if not isinstance(value, str):
        raise ValueError(f'{where} must be a string or an object with a "text" string, got {type(value).__name__}')
    return value


def _row_id(row: dict[str, Any]) -> str:
    if "id" not in row:
        raise ValueError('missing field "id"')
    value = row["id"]
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f'"id" must be a string or an integer, got {type(value).__name__}')
    return str(value)


def parse_row(raw: object, line: int) -> Job | BadRow:
    """Check one input row (a JSONL line's text, or a Parquet row's dict) and make it a job."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            return BadRow(line, None, f"invalid JSON: {exc.msg} at column {exc.colno}")
    if not isinstance(raw, dict):
        return BadRow(line, None, f"a row must be a JSON object, got {type(raw).__name__}")
    try:
        row_id = _row_id(raw)
    except ValueError as exc:
        return BadRow(line, None, str(exc))
    try:
        return Job(line, row_id, _query(raw), _documents(raw))
    except ValueError as exc:
        return BadRow(line, row_id, str(exc))


def _query(row: dict[str, Any]) -> str:
    if "query" not in row:
        raise ValueError('missing field "query"')
    if not isinstance(row["query"], str):
        raise ValueError(f'"query" must be a string, got {type(row["query"]).__name__}')
    return row["query"]


def _documents(row: dict[str, Any]) -> tuple[str, ...]:
    # Parquet gives a missing column as None: treat it like an absent field.
    many, one = row.get("documents"), row.get("document")
    if many is not None and one is not None:
        raise ValueError('give either "documents" (a list) or "document" (a pair row), not both')
    if one is not None:
        return (_document(one, '"document"'),)
    if many is None:
        raise ValueError('missing field "documents" (a list) or "document" (a pair row)')
    if isinstance(many, str) or not isinstance(many, Sequence):
        raise ValueError(f'"documents" must be a list, got {type(many).__name__}')
    return tuple(_document(d, f'"documents"[{i}]') for i, d in enumerate(many))


def output_row(job_id: str, scored: Sequence[ScoredDocument]) -> dict[str, Any]:
    """The output row of one job from its ranked documents (best first, as ``rerank`` returns them)."""
    ranks = {doc.index: place for place, doc in enumerate(scored, start=1)}
    by_index = sorted(scored, key=lambda doc: doc.index)
    return {
        "id": job_id,
        "results": [
            {"index": d.index, "score": d.score, "relevance_score": d.relevance_score, "rank": ranks[d.index]}
            for d in by_index
        ],
    }


def output_schema() -> Any:
    """The Arrow schema of output rows (Parquet output), kept next to ``output_row`` so both change together."""
    from crossrank.batch.files import pyarrow

    pa = pyarrow()
    result = pa.struct(
        [("index", pa.int64()), ("score", pa.float64()), ("relevance_score", pa.float64()), ("rank", pa.int64())]
    )
    return pa.schema([("id", pa.string()), ("results", pa.list_(result))])


def bad_row_record(bad: BadRow) -> dict[str, Any]:
    """The errors file's record of a bad row."""
    return {"line": bad.line, "id": bad.id, "reason": bad.reason}


def process(reranker: Reranker, items: Sequence[Job | BadRow]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One part's output rows (its jobs, scored together) and error records (its bad rows), in input order."""
    jobs = [item for item in items if isinstance(item, Job)]
    return score_jobs(reranker, jobs), [bad_row_record(item) for item in items if isinstance(item, BadRow)]


def score_jobs(reranker: Reranker, jobs: Sequence[Job]) -> list[dict[str, Any]]:
    """Output rows of ``jobs``: all their pairs go through one ``Reranker.score`` call, so short rows share batches.

    Both engines score exactly the same groups of jobs (one part at a time) with this function,
    which is why their outputs are identical.
    """
    pairs = [(job.query, doc) for job in jobs for doc in job.documents]
    logits = np.asarray(reranker.score(pairs) if pairs else [], dtype=np.float32)
    rows, start = [], 0
    for job in jobs:
        stop = start + len(job.documents)
        ranked = rank(logits[start:stop], job.documents, top_n=None, return_documents=False)
        rows.append(output_row(job.id, ranked))
        start = stop
    return rows
