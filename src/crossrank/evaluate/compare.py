"""Compare two saved evaluations (e.g. float32 vs int8, or max_length 512 vs 1024) data set by data set."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crossrank.errors import DataFormatError
from crossrank.evaluate.metrics import METRICS, Interval, mean, paired_interval, paired_p_value

__all__ = ["CompareReport", "CompareRow", "compare", "load_results", "read_saved"]


@dataclass(frozen=True, slots=True)
class CompareRow:
    """One metric of one data set after reranking: base vs new, with a paired t-test over shared queries.

    ``interval`` is that test's 95% confidence interval of the mean change (new - base).
    """

    dataset: str
    metric: str
    base: float
    new: float
    queries: int
    p_value: float | None
    interval: Interval | None = None

    @property
    def delta(self) -> float:
        return self.new - self.base


@dataclass(frozen=True, slots=True)
class CompareReport:
    """Row per (data set, metric); data sets present in only one of the two are listed apart."""

    base: str
    new: str
    rows: list[CompareRow]
    only_in_base: list[str] = field(default_factory=list)
    only_in_new: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "new": self.new,
            "rows": [
                {
                    "dataset": r.dataset,
                    "metric": r.metric,
                    "base": r.base,
                    "new": r.new,
                    "delta": r.delta,
                    "queries": r.queries,
                    "p_value": r.p_value,
                    "interval": r.interval,
                }
                for r in self.rows
            ],
            "only_in_base": self.only_in_base,
            "only_in_new": self.only_in_new,
        }


def _per_query(source: str, dataset: Any) -> dict[str, dict[str, float]]:
    try:
        reranked = dataset["per_query"]["reranked"]
        return {
            metric: {str(q): float(v) for q, v in reranked[metric].items()} for metric in METRICS if metric in reranked
        }
    except (KeyError, TypeError, ValueError, AttributeError):
        raise DataFormatError(
            source,
            None,
            "not a saved crossrank evaluation (datasets[].per_query.reranked is missing or malformed)",
            fix="save one with: crossrank eval --data DIR --model M --json > results.json",
        ) from None


def _read(path: str | Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataFormatError(str(path), None, f"cannot read the file ({exc.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        line = exc.lineno if isinstance(exc, json.JSONDecodeError) else None
        raise DataFormatError(str(path), line, "not valid JSON") from None


def read_saved(path: str | Path) -> dict[str, Any]:
    """A saved ``crossrank eval --json`` file as it was written, after checking that it is one."""
    value = _read(path)
    _results(str(path), value)
    return dict(value)


def load_results(results: str | Path | Mapping[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """Saved ``crossrank eval --json`` results (a file, or ``EvalReport.to_dict()``) as
    data set name -> metric -> query id -> reranked value."""
    source = "this run" if isinstance(results, Mapping) else str(results)
    return _results(source, results if isinstance(results, Mapping) else _read(results))


def _results(source: str, value: Any) -> dict[str, dict[str, dict[str, float]]]:
    datasets = value.get("datasets") if isinstance(value, Mapping) else None
    if not isinstance(datasets, list) or not all(
        isinstance(d, dict) and isinstance(d.get("name"), str) for d in datasets
    ):
        raise DataFormatError(source, None, 'not a saved crossrank evaluation (no "datasets" list with names)')
    return {d["name"]: _per_query(source, d) for d in datasets}


def compare(base: str | Path | Mapping[str, Any], new: str | Path | Mapping[str, Any]) -> CompareReport:
    """Diff two evaluations (saved JSON files or ``EvalReport.to_dict()``) per data set and metric.

    Means are over the queries both evaluated; the p-value is a paired t-test over those queries.
    """
    left, right = load_results(base), load_results(new)
    rows = []
    for name in (n for n in left if n in right):
        for metric in (m for m in METRICS if m in left[name] and m in right[name]):
            a, b = left[name][metric], right[name][metric]
            shared = [q for q in a if q in b]
            rows.append(
                CompareRow(
                    dataset=name,
                    metric=metric,
                    base=mean({q: a[q] for q in shared}),
                    new=mean({q: b[q] for q in shared}),
                    queries=len(shared),
                    p_value=paired_p_value(b, a),
                    interval=paired_interval(b, a),
                )
            )
    return CompareReport(
        base="this run" if isinstance(base, Mapping) else str(base),
        new="this run" if isinstance(new, Mapping) else str(new),
        rows=rows,
        only_in_base=[n for n in left if n not in right],
        only_in_new=[n for n in right if n not in left],
    )
