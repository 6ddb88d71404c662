"""``evaluate`` and ``crossrank eval --instruction`` on a decoder reranker (the tiny Qwen3-Reranker of
tests/decoders.py): the reranked order is ``Reranker.rerank``'s for that instruction, and the report says which
family and instruction scored it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_eval_cli import eval_in_process

from crossrank import Reranker
from crossrank.evaluate import evaluate, load_cmteb

INSTRUCTION = "Judge whether the passage names a capital city"
ROWS = [
    {"query": "what is a panda?", "positive": ["the giant panda is a bear"], "negative": ["hi", "pandas eat bamboo"]},
    {
        "query": "capital of france",
        "positive": ["Paris is the capital of France."],
        "negative": ["Berlin is the capital of Germany.", "The quick brown fox jumps over the lazy dog."],
    },
]


@pytest.fixture(scope="module")
def qwen3(tiny_qwen3_dir: Path) -> Iterator[Reranker]:
    with Reranker(str(tiny_qwen3_dir), device="cpu", dtype="float32") as reranker:
        reranker.rerank("warm-up", ["warm-up"])  # the first forward pass pays for torch's lazy set-up
        yield reranker


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "mini.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    return path


def _reranked(reranker: Reranker, instruction: str | None) -> dict[str, list[tuple[str, float]]]:
    """Query -> its documents by the library's score for ``instruction``, best first."""
    runs = {}
    for row in ROWS:
        texts = [*row["positive"], *row["negative"]]
        result = reranker.rerank(str(row["query"]), texts, instruction=instruction)
        runs[str(row["query"])] = [(texts[r.index], r.score) for r in result.results]
    return runs


def _report_run(data: Path, run: dict[str, list[tuple[str, float]]]) -> dict[str, list[tuple[str, float]]]:
    """The report's run, with query and document ids turned back into texts."""
    dataset = load_cmteb(data)
    return {dataset.queries[q]: [(dataset.documents[d], score) for d, score in ranked] for q, ranked in run.items()}


@pytest.mark.parametrize("instruction", [None, INSTRUCTION], ids=["default", "instruction"])
def test_evaluate_ranks_as_rerank_with_the_instruction(qwen3: Reranker, data: Path, instruction: str | None) -> None:
    with Reranker(str(qwen3.info.path), device="cpu", dtype="float32", instruction=instruction) as reranker:
        report = evaluate(data, reranker)
    (result,) = report.datasets
    assert report.family == "qwen3-reranker"
    assert report.instruction == (instruction or qwen3.family.default_instruction)
    got = _report_run(data, result.run)
    expected = _reranked(qwen3, instruction)
    assert got.keys() == expected.keys()
    for query, ranked in got.items():
        assert [text for text, _ in ranked] == [text for text, _ in expected[query]]
        assert [score for _, score in ranked] == pytest.approx([score for _, score in expected[query]], abs=1e-5)


def test_eval_command_takes_an_instruction(tiny_qwen3_dir: Path, qwen3: Reranker, data: Path) -> None:
    args = ["--data", data, "-m", tiny_qwen3_dir, "--device", "cpu", "--dtype", "float32", "--json"]
    outputs = [eval_in_process(*args, *extra, cwd=data.parent) for extra in ([], ["--instruction", INSTRUCTION])]
    payloads = []
    for done in outputs:
        assert done.returncode == 0, done.stderr
        payloads.append(json.loads(done.stdout))
    assert [(p["family"], p["instruction"]) for p in payloads] == [
        ("qwen3-reranker", qwen3.family.default_instruction),
        ("qwen3-reranker", INSTRUCTION),
    ]
    with Reranker(str(tiny_qwen3_dir), device="cpu", dtype="float32", instruction=INSTRUCTION) as reranker:
        expected = evaluate(data, reranker).datasets[0].reranked
    assert payloads[1]["datasets"][0]["reranked"] == pytest.approx(expected, abs=1e-9)
