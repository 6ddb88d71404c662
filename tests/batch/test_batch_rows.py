"""Input rows checked into jobs, bad rows with their reason, output rows' ranks (pure, no model)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import subprocess_env
from crossrank.batch.rows import BadRow, Job, output_row, parse_row
from crossrank.types import ScoredDocument


def test_list_and_pair_rows() -> None:
    assert parse_row('{"id": "a", "query": "q", "documents": ["x", {"text": "y"}]}', 3) == Job(3, "a", "q", ("x", "y"))
    assert parse_row({"id": 7, "query": "q", "document": "x", "documents": None}, 1) == Job(1, "7", "q", ("x",))
    assert parse_row({"id": "e", "query": "", "documents": []}, 2) == Job(2, "e", "", ())


@pytest.mark.parametrize(
    ("raw", "row_id", "reason"),
    [
        ("{not json", None, "invalid JSON"),
        ("[1, 2]", None, "must be a JSON object, got list"),
        ('{"query": "q", "documents": []}', None, 'missing field "id"'),
        ('{"id": true, "query": "q", "documents": []}', None, '"id" must be a string or an integer, got bool'),
        ('{"id": "a", "documents": []}', "a", 'missing field "query"'),
        ('{"id": "a", "query": 5, "documents": []}', "a", '"query" must be a string, got int'),
        ('{"id": "a", "query": "q"}', "a", 'missing field "documents"'),
        ('{"id": "a", "query": "q", "documents": "x"}', "a", '"documents" must be a list, got str'),
        ('{"id": "a", "query": "q", "documents": ["x", 3]}', "a", '"documents"[1] must be a string'),
        ('{"id": "a", "query": "q", "documents": [{"txt": "x"}]}', "a", '"documents"[0] must be a string or an object'),
        ('{"id": "a", "query": "q", "documents": ["x"], "document": "y"}', "a", "not both"),
    ],
)
def test_bad_rows_name_the_field(raw: str, row_id: str | None, reason: str) -> None:
    bad = parse_row(raw, 12)
    assert isinstance(bad, BadRow)
    assert (bad.line, bad.id) == (12, row_id)
    assert reason in bad.reason


def test_output_row_keeps_input_order_and_ranks() -> None:
    ranked = [ScoredDocument(2, 3.0, 0.95), ScoredDocument(0, 1.0, 0.73), ScoredDocument(1, 1.0, 0.73)]
    row = output_row("q1", ranked)
    assert row["id"] == "q1"
    assert [r["index"] for r in row["results"]] == [0, 1, 2]
    assert [r["rank"] for r in row["results"]] == [2, 3, 1]
    assert [r["score"] for r in row["results"]] == [1.0, 1.0, 3.0]


@pytest.mark.slow
def test_the_cli_loads_neither_ray_nor_pyarrow() -> None:
    code = "import sys, crossrank.cli, crossrank.batch; print([m for m in ('ray', 'pyarrow') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=subprocess_env())
    assert out.stdout.strip() == "[]"
