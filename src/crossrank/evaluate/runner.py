"""Evaluate a reranker: first stage (given candidates or BM25), rerank, metrics before and after."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np

from crossrank._version import __version__
from crossrank.errors import ConfigError, DataFormatError, InputError
from crossrank.evaluate.bm25 import Bm25Index
from crossrank.evaluate.data import Dataset, find_datasets
from crossrank.evaluate.metrics import (
    METRICS,
    Interval,
    mean,
    mean_interval,
    paired_interval,
    paired_p_value,
    per_query,
)
from crossrank.families import CROSS_ENCODER
from crossrank.reranker import Reranker

__all__ = [
    "DatasetReport",
    "EvalReport",
    "FirstStage",
    "ProgressCallback",
    "check_evaluable",
    "evaluate",
    "run_first_stage",
    "write_trec_run",
]

FirstStage = Literal["auto", "candidates", "bm25"]
#: Called as ``progress(dataset_name, pairs_done, pairs_total)`` after each scored chunk.
ProgressCallback = Callable[[str, int, int], None]

# Pairs scored per Reranker call at most: large enough for well-packed length-sorted batches; a set smaller
# than _PROGRESS_STEPS of these is cut finer (down to one query a call) so its progress bar still moves.
_CHUNK_PAIRS = 1024
_PROGRESS_STEPS = 20
# Bins of the reranked-score histograms of relevant and non-relevant documents (the report's third plot).
_SCORE_BINS = 30
_EMPTY_FIX = "check that the file is the complete data set (BEIR: corpus, queries and qrels; C-MTEB: one query a line)"


@dataclass(frozen=True, slots=True)
class DatasetReport:
    """Ranking quality on one data set, before and after reranking.

    Attributes:
        first_stage: ``candidates`` (the given order), ``bm25`` (retrieved from the corpus) or
            ``bm25-pool`` (the given unordered pool, ordered by BM25).
        metrics / reranked: mean metric values of the first stage and after reranking.
        p_values: paired t-test of reranked vs first stage per metric (``None``: undefined).
        intervals: ``{"first_stage"|"reranked"|"delta": {metric: (low, high) | None}}``, 95% Student's t
            intervals over queries (``delta``: the paired t-test's interval of the mean change).
        score_histogram: the reranked scores of relevant (grade >= 1) and non-relevant (judged 0 or
            unjudged) documents: ``{"edges": [...], "relevant": [counts], "non_relevant": [counts]}``.
        per_query: ``{"first_stage"|"reranked": {metric: {query id: value}}}`` for paired tests later.
        run: query id -> [(document id, score)] after reranking, best first (not saved in JSON).
    """

    name: str
    path: str
    first_stage: str
    queries: int
    skipped_queries: int
    pairs: int
    seconds: float
    metrics: dict[str, float]
    reranked: dict[str, float]
    p_values: dict[str, float | None]
    per_query: dict[str, dict[str, dict[str, float]]]
    intervals: dict[str, dict[str, Interval | None]]
    score_histogram: dict[str, list[float]]
    run: dict[str, list[tuple[str, float]]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def delta(self) -> dict[str, float]:
        """Reranked minus first stage, per metric."""
        return {name: self.reranked[name] - self.metrics[name] for name in self.metrics}

    @property
    def pairs_per_second(self) -> float:
        return self.pairs / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "run"}
        return {**values, "delta": self.delta, "pairs_per_second": self.pairs_per_second}


@dataclass(frozen=True, slots=True)
class EvalReport:
    """What ``crossrank eval`` measured: the configuration and one report per data set.

    ``family`` is how the model was scored (``crossrank.families``) and ``instruction`` the instruction a decoder
    reranker read (its family's default unless one was given; ``None`` for a cross-encoder).
    """

    model: str
    device: str
    dtype: str
    max_length: int
    top_k: int
    datasets: list[DatasetReport]
    created: str = ""
    version: str = __version__
    family: str = CROSS_ENCODER.name
    instruction: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what ``--json`` prints and ``--compare`` reads back)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {**values, "metric_names": list(METRICS), "datasets": [d.to_dict() for d in self.datasets]}


def run_first_stage(
    dataset: Dataset, mode: FirstStage = "auto", top_k: int = 100, queries: Sequence[str] | None = None
) -> tuple[str, dict[str, list[str]]]:
    """The first stage's ranked lists: ``(kind, {query id: doc ids})`` for ``queries`` (default: all judged).

    ``kind`` is ``candidates`` (the given order), ``bm25`` (retrieved from the corpus) or ``bm25-pool``
    (the given unordered pool, ordered by BM25).
    """
    if queries is None:
        queries = [q for q in dataset.queries if q in dataset.qrels]
    if mode == "candidates" and dataset.candidates is None:
        raise ConfigError(
            f"{dataset.name} has no candidate lists",
            fix="add candidates.jsonl (or pass a TREC run), or use the BM25 first stage",
        )
    if dataset.candidates is None or mode == "bm25":
        index = Bm25Index(dataset.documents)
        return "bm25", {q: index.search(dataset.queries[q], top_k) for q in queries}
    if dataset.ordered:
        return "candidates", {q: dataset.candidates.get(q, [])[:top_k] for q in queries}
    # An unordered pool (C-MTEB): "positives first" would be a fake baseline, so BM25 orders it.
    pool_index = Bm25Index(dataset.documents)
    return "bm25-pool", {
        q: pool_index.order(dataset.queries[q], dataset.candidates.get(q, []))[:top_k] for q in queries
    }


def _chunks(queries: list[str], ranked: dict[str, list[str]]) -> list[list[str]]:
    """Whole queries per Reranker call, about ``_CHUNK_PAIRS`` pairs, or a twentieth of a small set's pairs."""
    target = min(_CHUNK_PAIRS, max(1, sum(len(ranked[q]) for q in queries) // _PROGRESS_STEPS))
    chunks: list[list[str]] = [[]]
    size = 0
    for q in queries:
        if size >= target:
            chunks.append([])
            size = 0
        chunks[-1].append(q)
        size += len(ranked[q])
    return chunks


def check_evaluable(dataset: Dataset) -> None:
    """Raise ``DataFormatError`` when ``dataset`` has nothing to evaluate: no documents, or no judged query."""
    if not dataset.documents:
        what = "no documents" if dataset.queries else "no queries and no documents"
        raise DataFormatError(dataset.path, None, f"{what}: nothing to evaluate", fix=_EMPTY_FIX)
    if not any(q in dataset.qrels for q in dataset.queries):
        raise DataFormatError(
            dataset.path,
            None,
            f"no judged queries: none of its {len(dataset.queries)} queries has relevance judgements (qrels)",
            fix=_EMPTY_FIX,
        )


def _evaluate_one(
    dataset: Dataset,
    reranker: Reranker,
    *,
    top_k: int,
    max_length: int | None,
    first_stage: FirstStage,
    max_queries: int | None,
    progress: ProgressCallback | None,
) -> DatasetReport:
    check_evaluable(dataset)
    judged = [q for q in dataset.queries if q in dataset.qrels]
    queries = judged[:max_queries]
    stage, ranked = run_first_stage(dataset, first_stage, top_k, queries)
    total = sum(len(ranked[q]) for q in queries)
    run: dict[str, list[tuple[str, float]]] = {}
    done = 0
    seconds = 0.0
    if progress is not None:
        progress(dataset.name, 0, total)
    for chunk in _chunks(queries, ranked):
        pairs = [(dataset.queries[q], dataset.documents[d]) for q in chunk for d in ranked[q]]
        started = time.perf_counter()
        scores = reranker.score(pairs, max_length=max_length) if pairs else []
        seconds += time.perf_counter() - started
        offset = 0
        for q in chunk:
            mine = scores[offset : offset + len(ranked[q])]
            offset += len(ranked[q])
            # Equal scores keep the first-stage order.
            order = sorted(range(len(mine)), key=lambda i: (-mine[i], i))
            run[q] = [(ranked[q][i], mine[i]) for i in order]
        done += len(pairs)
        if progress is not None:
            progress(dataset.name, done, total)
    qrels = {q: dataset.qrels[q] for q in queries}
    before = per_query(qrels, ranked)
    after = per_query(qrels, {q: [d for d, _ in docs] for q, docs in run.items()})
    return DatasetReport(
        name=dataset.name,
        path=dataset.path,
        first_stage=stage,
        queries=len(queries),
        skipped_queries=len(dataset.queries) - len(judged),
        pairs=total,
        seconds=seconds,
        metrics={name: mean(before[name]) for name in METRICS},
        reranked={name: mean(after[name]) for name in METRICS},
        p_values={name: paired_p_value(after[name], before[name]) for name in METRICS},
        per_query={"first_stage": before, "reranked": after},
        intervals={
            "first_stage": {name: mean_interval(before[name]) for name in METRICS},
            "reranked": {name: mean_interval(after[name]) for name in METRICS},
            "delta": {name: paired_interval(after[name], before[name]) for name in METRICS},
        },
        score_histogram=_score_histogram(run, qrels),
        run=run,
    )


def _score_histogram(
    run: dict[str, list[tuple[str, float]]], qrels: dict[str, dict[str, int]]
) -> dict[str, list[float]]:
    """Counts of relevant and non-relevant documents' scores in ``_SCORE_BINS`` shared bins."""
    relevant = [s for q, docs in run.items() for d, s in docs if qrels[q].get(d, 0) >= 1]
    other = [s for q, docs in run.items() for d, s in docs if qrels[q].get(d, 0) < 1]
    if not relevant and not other:
        return {"edges": [], "relevant": [], "non_relevant": []}
    edges = np.histogram_bin_edges(relevant + other, bins=_SCORE_BINS)
    return {
        "edges": edges.tolist(),
        "relevant": np.histogram(relevant, bins=edges)[0].tolist(),
        "non_relevant": np.histogram(other, bins=edges)[0].tolist(),
    }


def evaluate(
    data: str | Path | Dataset | Sequence[str | Path | Dataset],
    reranker: Reranker | str,
    *,
    top_k: int = 100,
    max_length: int | None = None,
    first_stage: FirstStage = "auto",
    max_queries: int | None = None,
    split: str = "test",
    progress: ProgressCallback | None = None,
) -> EvalReport:
    """Measure how much ``reranker`` improves the first stage on each data set.

    Example:
        >>> report = evaluate("../shared/data/en_beir_dbpedia_subset", "path/to/cross-encoder")
        >>> d = report.datasets[0]
        >>> d.metrics["ndcg@10"], d.reranked["ndcg@10"], d.delta["ndcg@10"]

    Args:
        data: a BEIR folder, a C-MTEB reranking ``.jsonl`` file, a folder of those, a loaded
            :class:`Dataset`, or a list of any of them.
        reranker: a :class:`Reranker`, or a model id/folder to open one (closed afterwards).
        top_k: first-stage candidates per query that are reranked (BM25 hits or the first of the given list).
        max_length: tokens per pair for this evaluation (default: the reranker's).
        first_stage: ``auto`` (given candidates, else BM25), ``candidates`` or ``bm25`` (ignore given ones).
        max_queries: evaluate only the first N judged queries of each data set (in file order).
        split: which ``qrels/<split>.tsv`` of a BEIR folder to use when there is no ``qrels.tsv``.
        progress: called as ``progress(dataset, pairs_done, pairs_total)``.
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ConfigError(f"top_k must be a positive integer, got {top_k!r}")
    if max_queries is not None and (
        isinstance(max_queries, bool) or not isinstance(max_queries, int) or max_queries < 1
    ):
        raise ConfigError(f"max_queries must be a positive integer, got {max_queries!r}")
    if first_stage not in ("auto", "candidates", "bm25"):
        raise ConfigError(f"first_stage must be auto, candidates or bm25, got {first_stage!r}")
    items = [data] if isinstance(data, str | Path | Dataset) else list(data)
    datasets = [
        d for item in items for d in ([item] if isinstance(item, Dataset) else find_datasets(item, split=split))
    ]
    owned = isinstance(reranker, str)
    model = Reranker(reranker) if isinstance(reranker, str) else reranker
    try:
        reports = [
            _evaluate_one(
                d,
                model,
                top_k=top_k,
                max_length=max_length,
                first_stage=first_stage,
                max_queries=max_queries,
                progress=progress,
            )
            for d in datasets
        ]
    finally:
        if owned:
            model.close()
    return EvalReport(
        model=model.model,
        device=model.device,
        dtype=model.dtype,
        max_length=model.truncation.max_length if max_length is None else max_length,
        top_k=top_k,
        datasets=reports,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        family=model.family.name,
        instruction=model.instruction,
    )


def write_trec_run(report: DatasetReport, path: str | Path, *, tag: str = "crossrank") -> None:
    """Write the reranked lists as a TREC run: ``qid Q0 docid rank score tag``."""
    spaced = next(
        (i for q, docs in report.run.items() for i in (q, *(d for d, _ in docs)) if len(i.split()) != 1), None
    )
    if spaced is not None:
        raise InputError(f"id {spaced!r} of {report.name} contains whitespace, which a TREC run file cannot hold")
    with Path(path).open("w", encoding="utf-8") as handle:
        for query_id, docs in report.run.items():
            for rank, (doc_id, score) in enumerate(docs, start=1):
                handle.write(f"{query_id} Q0 {doc_id} {rank} {score:.6f} {tag}\n")
