"""Input files for the batch tests: list rows and pair rows, English, varied lengths (deterministic)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_DOCS = [
    "The giant panda is a bear native to south central China.",
    "Pandas eat almost nothing but bamboo shoots and leaves.",
    "Paris is the capital and most populous city of France.",
    "hi",
    "The stock market fell sharply on Monday after the announcement.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "",
    "A bear is a large mammal with thick fur and a short tail.",
]
_QUERIES = ["what do pandas eat?", "capital of France", "how do plants make food?", "what is a bear?"]


def make_rows(count: int) -> list[dict[str, Any]]:
    """``count`` rows: mostly list rows of 2-8 documents (some as {"text": ...}), every fifth a pair row."""
    rows: list[dict[str, Any]] = []
    for i in range(count):
        query = _QUERIES[i % len(_QUERIES)]
        if i % 5 == 4:
            rows.append({"id": f"p{i}", "query": query, "document": _DOCS[i % len(_DOCS)]})
            continue
        docs: list[Any] = [_DOCS[(i + k) % len(_DOCS)] for k in range(2 + i % 7)]
        if i % 3 == 0:
            docs[0] = {"text": docs[0]}
        rows.append({"id": i, "query": f"{query} ({i})", "documents": docs})
    return rows


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    """One JSON value per line; strings are written as they are (for malformed lines)."""
    lines = [row if isinstance(row, str) else json.dumps(row, ensure_ascii=False) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
