"""`crossrank eval`: its exit code, stdout and stderr.

With the English model it runs as users run it, a subprocess (slow); the comparisons and argument errors, which
load no model, run in this process (typer's ``CliRunner``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
from typer.testing import CliRunner

from crossrank.cli import app

SRC = Path(__file__).resolve().parents[2] / "src"


def crossrank(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    env.pop("CROSSRANK_MODEL", None)
    env["CROSSRANK_DTYPE"] = "float32"  # as the in-process runs it is compared with (conftest.subprocess_env)
    return subprocess.run(
        [sys.executable, "-m", "crossrank", "eval", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
        check=False,
    )


class _Done(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def eval_in_process(*args: str | Path, cwd: Path) -> _Done:
    """The command in this process, from ``cwd`` (relative paths are the test's files)."""
    previous = os.getcwd()
    os.chdir(cwd)
    try:
        out = CliRunner().invoke(app, ["eval", *map(str, args)], env={"CROSSRANK_MODEL": None})
    finally:
        os.chdir(previous)
    return _Done(out.exit_code, out.stdout, out.stderr)


@pytest.mark.slow
def test_eval_json_run_file_and_compare(tmp_path: Path, shared_data: Path, english_model_dir: Path) -> None:
    en = shared_data / "en_beir_dbpedia_subset"
    args = ["--data", en, "--model", english_model_dir, "--device", "cpu", "--max-queries", "2", "--top-k", "10"]
    done = crossrank(*args, "--json", "--run-out", "run.trec", "--save", "first.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    (dataset,) = payload["datasets"]
    assert (dataset["name"], dataset["queries"], dataset["pairs"]) == ("en_beir_dbpedia_subset", 2, 20)
    assert payload["top_k"] == 10
    assert payload["max_length"] == 512
    assert json.loads((tmp_path / "first.json").read_text())["datasets"][0]["reranked"] == dataset["reranked"]
    lines = (tmp_path / "run.trec").read_text().splitlines()
    assert len(lines) == 20
    assert all(len(line.split()) == 6 and line.split()[1] == "Q0" for line in lines)
    assert [line.split()[3] for line in lines[:10]] == [str(rank) for rank in range(1, 11)]

    # The table, and a comparison of this run (max_length 64) against the saved one.
    done = crossrank(*args, "--max-length", "64", "--compare", "first.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for text in ("ndcg@10", "mrr@10", "recall@100", "first stage", "reranked", "delta", "base: first.json"):
        assert text in done.stdout
    assert "max_length 64" in done.stdout


def test_compare_two_saved_files(tmp_path: Path) -> None:
    def saved(name: str, values: dict[str, float]) -> Path:
        per_query = dict.fromkeys(("ndcg@10", "mrr@10", "map", "recall@10", "recall@100"), values)
        path = tmp_path / name
        path.write_text(json.dumps({"datasets": [{"name": "set", "per_query": {"reranked": per_query}}]}))
        return path

    base = saved("a.json", {"q1": 0.5, "q2": 0.25, "q3": 0.0})
    new = saved("b.json", {"q1": 0.75, "q2": 0.5, "q3": 0.5, "q4": 1.0})
    done = eval_in_process("--compare", base, "--compare", new, "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)["rows"]
    assert len(rows) == 5
    # Means over the three shared queries only (q4 is new).
    assert rows[0]["base"] == pytest.approx(0.25)
    assert rows[0]["new"] == pytest.approx(0.5833333333)
    assert rows[0]["delta"] == pytest.approx(0.3333333333)
    assert rows[0]["queries"] == 3
    done = eval_in_process("--compare", base, "--compare", new, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "+0.3333" in done.stdout


def test_bad_input_exits_2_with_file_and_line(tmp_path: Path) -> None:
    data = tmp_path / "broken.jsonl"
    data.write_text('{"query": "q", "positive": ["p"], "negative": ["n"]}\n{"query": \n')
    done = eval_in_process("--data", data, "--model", tmp_path / "no-model", cwd=tmp_path)
    assert done.returncode == 2
    assert f"{data}:2: not valid JSON" in done.stderr
    assert "Traceback" not in done.stderr

    done = eval_in_process(cwd=tmp_path)
    assert done.returncode == 2
    assert "give --data to evaluate, or two --compare files" in done.stderr

    done = eval_in_process("--data", tmp_path / "nowhere", cwd=tmp_path)
    assert done.returncode == 2
    assert "no such file or folder" in done.stderr

    done = eval_in_process("--data", data, "--top-k", "0", cwd=tmp_path)
    assert done.returncode == 2


def test_missing_model_exits_3(tmp_path: Path) -> None:
    data = tmp_path / "ok.jsonl"
    data.write_text('{"query": "q", "positive": ["p"], "negative": ["n"]}\n')
    done = eval_in_process("--data", data, "--model", tmp_path / "no-model", cwd=tmp_path)
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
