"""Reliability tests record their parameters and measured figures; benchmarks/reliability.py turns them into
RELIABILITY.md."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# Set by benchmarks/reliability.py: one JSON line per recorded test is appended there.
REPORT_ENV = "CROSSRANK_RELIABILITY_OUT"

Record = Callable[[dict[str, Any], dict[str, Any]], None]


@pytest.fixture
def record_figures(request: pytest.FixtureRequest) -> Record:
    """``record_figures(parameters, figures)``: keep what this test ran with and what it measured.

    Always printed (``pytest -s`` shows it); appended to ``$CROSSRANK_RELIABILITY_OUT`` when that is set.
    """

    def record(parameters: dict[str, Any], figures: dict[str, Any]) -> None:
        doc = (request.function.__doc__ or "").strip().splitlines()
        row = {
            "test": request.node.nodeid,
            "what": doc[0] if doc else request.node.name,
            "parameters": parameters,
            "figures": figures,
        }
        print(json.dumps(row, ensure_ascii=False))
        out = os.environ.get(REPORT_ENV)
        if out:
            with Path(out).open("a", encoding="utf-8") as f:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")

    return record
