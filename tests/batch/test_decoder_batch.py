"""``crossrank.batch.run`` on a decoder reranker (the tiny Qwen3-Reranker of tests/decoders.py): the run's
instruction gives ``Reranker.rerank``'s scores for it, is part of the resume fingerprint (a resumed run with another
one is refused, naming it), and the Ray engine (slow) gives the local engine's output."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from batch_data import make_rows, read_jsonl, write_jsonl

from crossrank import ConfigError, Reranker
from crossrank.batch import run

FIRST = "Judge whether the passage names a capital city"
SECOND = "Judge whether the passage is about animals"
# Float32 on the CPU, as the reference reranker below.
OPTIONS = {"device": "cpu", "dtype": "float32"}


class Stop(Exception):
    """Ends a run mid-way, as an interruption would (KeyboardInterrupt would stop pytest itself)."""


@pytest.fixture(scope="module")
def qwen3(tiny_qwen3_dir: Path) -> Iterator[Reranker]:
    with Reranker(str(tiny_qwen3_dir), **OPTIONS) as reranker:  # type: ignore[arg-type]
        reranker.rerank("warm-up", ["warm-up"])  # the first forward pass pays for torch's lazy set-up
        yield reranker


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    return make_rows(12)


def _documents(row: dict[str, Any]) -> list[str]:
    if "document" in row:
        return [row["document"]]
    return [d["text"] if isinstance(d, dict) else d for d in row["documents"]]


def _assert_scores(output: Path, rows: list[dict[str, Any]], reranker: Reranker, instruction: str | None) -> None:
    written = read_jsonl(output)
    assert [r["id"] for r in written] == [str(row["id"]) for row in rows]
    for row, out in zip(rows, written, strict=True):
        expected = {
            r.index: r.score for r in reranker.rerank(row["query"], _documents(row), instruction=instruction).results
        }
        assert {r["index"]: pytest.approx(r["score"], abs=1e-5) for r in out["results"]} == expected


@pytest.mark.parametrize("instruction", [None, FIRST], ids=["default", "instruction"])
def test_a_runs_instruction_gives_the_librarys_scores(
    tmp_path: Path, tiny_qwen3_dir: Path, qwen3: Reranker, rows: list[dict[str, Any]], instruction: str | None
) -> None:
    given = {} if instruction is None else {"instruction": instruction}
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    report = run(source, tmp_path / "out.jsonl", model=str(tiny_qwen3_dir), reranker_options={**OPTIONS, **given})
    assert (report.rows, report.bad_rows) == (len(rows), 0)
    _assert_scores(tmp_path / "out.jsonl", rows, qwen3, instruction)


def _interrupted_run(source: Path, output: Path, model: Path, instruction: str) -> None:
    """A run stopped after its first part, leaving that part committed in OUTPUT.parts/."""
    calls = 0

    def progress(done: int, total: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:  # the first call comes before any part
            raise Stop

    options = {**OPTIONS, "instruction": instruction}
    with pytest.raises(Stop):
        run(source, output, model=str(model), reranker_options=options, part_rows=4, progress=progress)


def test_a_resumed_run_with_another_instruction_is_refused_naming_it(
    tmp_path: Path, tiny_qwen3_dir: Path, qwen3: Reranker, rows: list[dict[str, Any]]
) -> None:
    source, output = write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl"
    _interrupted_run(source, output, tiny_qwen3_dir, FIRST)
    other = {**OPTIONS, "instruction": SECOND}
    with pytest.raises(ConfigError, match=f"instruction: '{FIRST}' then, '{SECOND}' now"):
        run(source, output, model=str(tiny_qwen3_dir), reranker_options=other, part_rows=4)
    same = {**OPTIONS, "instruction": FIRST}
    report = run(source, output, model=str(tiny_qwen3_dir), reranker_options=same, part_rows=4)
    assert (report.resumed_parts, report.parts, report.rows) == (1, 3, len(rows))
    _assert_scores(output, rows, qwen3, FIRST)


def test_the_familys_default_instruction_given_resumes_a_run_without_one(
    tmp_path: Path, tiny_qwen3_dir: Path, qwen3: Reranker, rows: list[dict[str, Any]]
) -> None:
    """The fingerprint holds the instruction the run scores with: none given is the family's default."""
    source, output = write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl"
    default = qwen3.family.default_instruction
    assert default is not None
    _interrupted_run(source, output, tiny_qwen3_dir, default)
    report = run(source, output, model=str(tiny_qwen3_dir), reranker_options=OPTIONS, part_rows=4)
    assert report.resumed_parts == 1
    _assert_scores(output, rows, qwen3, None)
