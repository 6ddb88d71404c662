"""Metric values on a tiny hand-checked data set (ir-measures underneath), and the paired t-test."""

from __future__ import annotations

import math

import pytest

from crossrank.errors import ConfigError
from crossrank.evaluate.extras import require
from crossrank.evaluate.metrics import METRICS, mean, paired_p_value, per_query

QRELS = {
    "q1": {"d1": 2, "d2": 1, "d3": 0, "d4": 1},  # d4 is never retrieved
    "q2": {"e1": 1},
    "q3": {"f1": 1},  # no ranked list at all
    "q4": {"a": 0, "b": 1},
}
RUN = {
    "q1": ["d3", "d1", "d5", "d2"],  # d5 is unjudged: counts as non-relevant
    "q2": ["e1"],
    "q4": ["a", "b"],  # trec_eval would break a score tie by id and put "b" first; the order must hold
    "q9": ["x"],  # a query without qrels is not evaluated
}

# Worked by hand: linear gain, log2(rank + 1) discount; relevant = grade >= 1 for MRR, MAP and recall.
Q1_NDCG = (2 / math.log2(3) + 1 / math.log2(5)) / (2 + 1 / math.log2(3) + 1 / 2)
EXPECTED = {
    "ndcg@10": {"q1": Q1_NDCG, "q2": 1.0, "q3": 0.0, "q4": 1 / math.log2(3)},
    "mrr@10": {"q1": 0.5, "q2": 1.0, "q3": 0.0, "q4": 0.5},
    "map": {"q1": (1 / 2 + 2 / 4) / 3, "q2": 1.0, "q3": 0.0, "q4": 0.5},
    "recall@10": {"q1": 2 / 3, "q2": 1.0, "q3": 0.0, "q4": 1.0},
    "recall@100": {"q1": 2 / 3, "q2": 1.0, "q3": 0.0, "q4": 1.0},
}


def test_per_query_values_equal_the_hand_computed_ones() -> None:
    values = per_query(QRELS, RUN)
    assert set(values) == set(METRICS)
    for metric, expected in EXPECTED.items():
        assert values[metric] == pytest.approx(expected, abs=1e-9), metric


def test_means_count_a_query_without_results_as_zero() -> None:
    values = per_query(QRELS, RUN)
    assert mean(values["ndcg@10"]) == pytest.approx((Q1_NDCG + 1 + 0 + 1 / math.log2(3)) / 4)
    assert mean(values["mrr@10"]) == pytest.approx(0.5)
    assert mean({}) == 0.0


def test_cutoff_at_ten_ignores_the_eleventh_document() -> None:
    run = {"q": [f"n{i}" for i in range(10)] + ["rel"]}
    values = per_query({"q": {"rel": 1}}, run)
    assert values["ndcg@10"]["q"] == 0.0
    assert values["mrr@10"]["q"] == 0.0
    assert values["recall@10"]["q"] == 0.0
    assert values["recall@100"]["q"] == 1.0
    assert values["map"]["q"] == pytest.approx(1 / 11)


def test_paired_p_value_matches_the_closed_form() -> None:
    # Differences 1, 2, 2: t = 5 with 2 degrees of freedom, whose two-sided p is 1 - t / sqrt(2 + t^2).
    a = {"x": 1.0, "y": 2.0, "z": 3.0}
    b = {"x": 0.0, "y": 0.0, "z": 1.0}
    assert paired_p_value(a, b) == pytest.approx(1 - 5 / math.sqrt(27), rel=1e-9)
    assert paired_p_value(a, {**b, "extra": 9.0}) == pytest.approx(1 - 5 / math.sqrt(27), rel=1e-9)


def test_paired_p_value_is_none_when_undefined() -> None:
    assert paired_p_value({"x": 1.0, "y": 0.5}, {"x": 1.0, "y": 0.5}) is None
    assert paired_p_value({"x": 1.0}, {"x": 0.0}) is None


def test_a_missing_extra_names_the_install_command() -> None:
    with pytest.raises(
        ConfigError, match="the demo needs no_such_module_for_crossrank, which is not installed"
    ) as caught:
        require("no_such_module_for_crossrank.sub", "the demo")
    assert caught.value.fix == "pip install 'crossrank[eval]'"
