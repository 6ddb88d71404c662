"""Ranking metrics (ir-measures, i.e. trec_eval) per query, their means, t-intervals and paired t-tests.

Runs are passed as ranked lists; the scores ir-measures sees are derived from the rank, so trec_eval's
own tie-breaking (by document id) never reorders what the reranker or BM25 decided.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from crossrank.evaluate.extras import require

__all__ = [
    "CONFIDENCE",
    "METRICS",
    "Interval",
    "mean",
    "mean_interval",
    "paired_interval",
    "paired_p_value",
    "per_query",
]

#: Confidence level of every interval in a report: Student's t over queries (one-sample, or paired for a change).
CONFIDENCE = 0.95
#: ``(low, high)`` of a confidence interval.
Interval = tuple[float, float]

# Report name -> ir-measures measure. Graded gain for NDCG (gain = grade, as trec_eval); MRR, MAP and
# recall count grade >= 1 as relevant.
METRICS: dict[str, str] = {
    "ndcg@10": "nDCG@10",
    "mrr@10": "RR(rel=1)@10",
    "map": "AP(rel=1)",
    "recall@10": "R(rel=1)@10",
    "recall@100": "R(rel=1)@100",
}


def per_query(qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Sequence[str]]) -> dict[str, dict[str, float]]:
    """Metric name -> query id -> value, for every query in ``qrels``.

    A query with no ranked list scores 0 on every metric (trec_eval would silently leave it out of the
    mean, which flatters a first stage that finds nothing).
    """
    ir = require("ir_measures", "evaluation metrics")
    measures = {ir.parse_measure(spec): name for name, spec in METRICS.items()}
    judged = [ir.Qrel(q, d, int(g)) for q, grades in qrels.items() for d, g in grades.items()]
    scored = [
        ir.ScoredDoc(q, d, float(len(ranked) - position))
        for q, ranked in run.items()
        if q in qrels
        for position, d in enumerate(ranked)
    ]
    values: dict[str, dict[str, float]] = {name: dict.fromkeys(qrels, 0.0) for name in METRICS}
    for metric in ir.iter_calc(list(measures), judged, scored):
        values[measures[metric.measure]][metric.query_id] = float(metric.value)
    return values


def mean(values: Mapping[str, float]) -> float:
    """Mean over queries (0.0 for none)."""
    return math.fsum(values.values()) / len(values) if values else 0.0


def mean_interval(values: Mapping[str, float]) -> Interval | None:
    """The ``CONFIDENCE`` t-interval of the mean over queries; ``None`` for fewer than two queries."""
    return _t_interval(list(values.values()))


def paired_interval(a: Mapping[str, float], b: Mapping[str, float]) -> Interval | None:
    """The ``CONFIDENCE`` t-interval of the mean of ``a - b`` over the queries both share: the interval of the
    paired t-test that :func:`paired_p_value` reports; ``None`` for fewer than two shared queries."""
    return _t_interval([a[q] - b[q] for q in a if q in b])


def _t_interval(x: list[float]) -> Interval | None:
    if len(x) < 2:
        return None
    if len(set(x)) == 1:
        return x[0], x[0]  # no spread: the exact answer, where scipy would warn about rounding
    ci = require("scipy.stats", "confidence intervals").ttest_1samp(x, 0.0).confidence_interval(CONFIDENCE)
    return float(ci.low), float(ci.high)


def paired_p_value(a: Mapping[str, float], b: Mapping[str, float]) -> float | None:
    """Two-sided paired t-test p-value over the queries both share; ``None`` when it is undefined.

    Undefined means fewer than two shared queries or identical values on every query.
    """
    shared = [q for q in a if q in b]
    x = [a[q] for q in shared]
    y = [b[q] for q in shared]
    if len(shared) < 2 or x == y:
        return None
    p = float(require("scipy.stats", "the paired t-test").ttest_rel(x, y).pvalue)
    return None if math.isnan(p) else p
