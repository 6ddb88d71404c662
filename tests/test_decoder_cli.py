"""The CLI on a decoder reranker (the tiny Qwen3-Reranker of tests/decoders.py): ``--instruction`` gives the
library's scores for it, ``--family`` scores a renamed checkpoint, a causal LM of no known family exits 3 naming the
families; ``crossrank batch --instruction``. In this process (typer's ``CliRunner``), and once as a user runs it
(a subprocess, slow)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from crossrank import Reranker
from crossrank.cli import app
from crossrank.config import MAX_INSTRUCTION_CHARS
from crossrank.families import FAMILIES
from test_cli import crossrank

QUERY = "what is a panda?"
DOCS = ["pandas eat bamboo", "Paris is the capital of France.", "the giant panda is a bear"]
INSTRUCTION = "Judge whether the passage names a capital city"
FLOAT32 = ["--device", "cpu", "--dtype", "float32"]


def run_cli(*args: str | Path) -> Result:
    return CliRunner().invoke(app, list(map(str, args)), env={"COLUMNS": "200", "CROSSRANK_MODEL": None})


@pytest.fixture(scope="module")
def renamed(tiny_qwen3_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Qwen3 reranker in a folder whose name says nothing of its family (a fine-tune's, say)."""
    return Path(shutil.copytree(tiny_qwen3_dir, tmp_path_factory.mktemp("renamed") / "my-finetune"))


def _scores(payload: dict[str, Any]) -> dict[int, float]:
    return {r["index"]: r["score"] for r in payload["results"]}


def _expected(reranker: Reranker, instruction: str | None) -> dict[int, Any]:
    result = reranker.rerank(QUERY, DOCS, instruction=instruction)
    return {r.index: pytest.approx(r.score, abs=1e-6) for r in result.results}


@pytest.mark.parametrize("instruction", [None, INSTRUCTION], ids=["default", "instruction"])
def test_rerank_gives_the_librarys_scores_for_the_instruction(
    tiny_qwen3_dir: Path, qwen3_reranker: Reranker, instruction: str | None
) -> None:
    given = [] if instruction is None else ["--instruction", instruction]
    done = run_cli("rerank", "-m", tiny_qwen3_dir, *FLOAT32, *given, "--json", QUERY, *DOCS)
    assert done.exit_code == 0, done.output
    payload = json.loads(done.stdout)
    assert _scores(payload) == _expected(qwen3_reranker, instruction)
    assert payload["family"] == "qwen3-reranker"
    assert payload["instruction"] == (instruction or qwen3_reranker.family.default_instruction)


def test_family_scores_a_renamed_checkpoint(renamed: Path, qwen3_reranker: Reranker) -> None:
    done = run_cli("rerank", "-m", renamed, *FLOAT32, "--family", "qwen3-reranker", "--json", QUERY, *DOCS)
    assert done.exit_code == 0, done.output
    assert _scores(json.loads(done.stdout)) == _expected(qwen3_reranker, None)


def test_a_causal_lm_of_no_known_family_exits_3_naming_the_families(renamed: Path) -> None:
    done = run_cli("rerank", "-m", renamed, *FLOAT32, QUERY, *DOCS)
    assert done.exit_code == 3
    assert "Traceback" not in done.output
    assert "matches no reranker family" in done.stderr
    assert all(name in done.stderr for name, family in FAMILIES.items() if family.decoder)
    assert "--family" in done.stderr  # the fix


@pytest.mark.parametrize("command", ["rerank", "verify", "doctor"])
def test_an_unknown_family_exits_2_naming_the_families(tiny_qwen3_dir: Path, command: str) -> None:
    """A bad option of every door that takes --family, before anything is loaded or checked."""
    target = {"rerank": ["-m", str(tiny_qwen3_dir), QUERY, *DOCS], "verify": [str(tiny_qwen3_dir)]}
    done = run_cli(command, "--family", "qwen4", *target.get(command, ["-m", str(tiny_qwen3_dir)]))
    assert done.exit_code == 2
    assert "Traceback" not in done.output
    assert "--family / CROSSRANK_FAMILY" in done.stderr
    assert all(name in done.stderr for name in FAMILIES)


def test_an_instruction_over_its_limit_exits_2(tiny_qwen3_dir: Path) -> None:
    done = run_cli("rerank", "-m", tiny_qwen3_dir, "--instruction", "x" * (MAX_INSTRUCTION_CHARS + 1), QUERY, *DOCS)
    assert done.exit_code == 2
    assert f"instruction is {MAX_INSTRUCTION_CHARS + 1} characters; at most {MAX_INSTRUCTION_CHARS}" in done.stderr


def test_batch_takes_an_instruction(tiny_qwen3_dir: Path, qwen3_reranker: Reranker, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": "q", "query": QUERY, "documents": DOCS}) + "\n", encoding="utf-8")
    output = tmp_path / "out.jsonl"
    done = run_cli("batch", source, output, "-m", tiny_qwen3_dir, *FLOAT32, "--instruction", INSTRUCTION, "--json")
    assert done.exit_code == 0, done.output
    (row,) = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert _scores(row) == _expected(qwen3_reranker, INSTRUCTION)


@pytest.mark.slow
def test_rerank_as_a_user_runs_it(tiny_qwen3_dir: Path, qwen3_reranker: Reranker) -> None:
    done = crossrank("rerank", "-m", str(tiny_qwen3_dir), "--instruction", INSTRUCTION, "--json", QUERY, *DOCS)
    assert done.returncode == 0, done.stderr
    assert _scores(json.loads(done.stdout)) == _expected(qwen3_reranker, INSTRUCTION)
