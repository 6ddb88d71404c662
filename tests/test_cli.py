"""The CLI: its output and exit codes.

Tests named ``..._fake_backend`` run the command in-process (typer's ``CliRunner``, 200 columns) on the fake
backend (``--backend fake``, token-overlap scores): parsing, rendering and exit codes do not need a model. The
entry point runs as a user runs it (a subprocess), and the commands whose output is a real model's judgement
(scores, ``check``, ``demo``) load the English model in a subprocess, marked slow."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from conftest import subprocess_env
from crossrank import __version__
from crossrank.cli import app


def crossrank(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crossrank", *args],
        check=False,
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=300,
        env=subprocess_env(COLUMNS="200", **(env or {})),
    )


def run_cli(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> Result:
    """The command in this process, as the fake backend's tests run it."""
    return CliRunner().invoke(app, list(args), input=stdin, env={"COLUMNS": "200", **(env or {})})


def fake(model_dir: Path) -> list[str]:
    return ["-m", str(model_dir), "--backend", "fake"]


def test_version() -> None:
    out = crossrank("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"crossrank {__version__}"


def test_rerank_arguments_as_json_fake_backend(fake_model_dir: Path) -> None:
    out = run_cli(
        "rerank", "apple iphone price", "Apples are fruit", "the apple iphone price", *fake(fake_model_dir), "--json"
    )
    assert out.exit_code == 0, out.stderr
    payload = json.loads(out.stdout)
    assert [r["index"] for r in payload["results"]] == [1, 0]
    assert payload["results"][0]["document"] == "the apple iphone price"
    assert payload["results"][0]["relevance_score"] > payload["results"][1]["relevance_score"]
    assert payload["usage"]["total_tokens"] > 0 and payload["model"] == str(fake_model_dir)


@pytest.mark.slow
def test_rerank_arguments_as_json(english_model_dir: Path) -> None:
    out = crossrank(
        "rerank",
        "apple iphone price",
        "Apples are a healthy fruit",
        "The new iPhone costs 999 dollars",
        "-m",
        str(english_model_dir),
        "--json",
    )
    assert out.returncode == 0, out.stderr
    payload = json.loads(out.stdout)
    assert [r["index"] for r in payload["results"]] == [1, 0]
    assert payload["results"][0]["document"] == "The new iPhone costs 999 dollars"
    assert payload["results"][0]["score"] == pytest.approx(3.5015, abs=1e-3)
    assert payload["usage"]["total_tokens"] > 0


def test_rerank_from_files_and_stdin_fake_backend(tmp_path: Path, fake_model_dir: Path) -> None:
    documents = ["Paris is the capital of France", "Berlin has a population of 3.5 million", "bananas are yellow"]
    txt = tmp_path / "docs.txt"
    txt.write_text("\n".join(documents) + "\n\n")
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("\n".join(json.dumps(d if i % 2 else {"text": d}) for i, d in enumerate(documents)))
    runs = [
        run_cli("rerank", "Berlin population", "--file", str(txt), "-n", "2", *fake(fake_model_dir), "--json"),
        run_cli("rerank", "Berlin population", "-f", str(jsonl), "-n", "2", *fake(fake_model_dir), "--json"),
        run_cli(
            "rerank",
            "Berlin population",
            "-n",
            "2",
            "--json",
            stdin="\n".join(documents),
            env={"CROSSRANK_MODEL": str(fake_model_dir), "CROSSRANK_BACKEND": "fake"},
        ),
    ]
    for out in runs:
        assert out.exit_code == 0, out.stderr
        results = json.loads(out.stdout)["results"]
        assert results[0]["document"] == documents[1]
        assert len(results) == 2


def test_rerank_table_fake_backend(fake_model_dir: Path) -> None:
    out = run_cli("rerank", "what is panda?", "hi", "The giant panda is a bear.", *fake(fake_model_dir))
    assert out.exit_code == 0, out.stderr
    assert out.stdout.index("The giant panda is a bear.") < out.stdout.index(" hi ")
    assert "2 results" in out.stdout


def test_rerank_reports_chunking_and_truncation_fake_backend(fake_model_dir: Path) -> None:
    long = "word " * 600
    args = ["rerank", "q", long, *fake(fake_model_dir), "--max-length", "128", "--json"]
    out = run_cli(*args)
    assert out.exit_code == 0, out.stderr
    assert "1 long document(s) were read in windows of up to 128 tokens" in out.stderr
    payload = json.loads(out.stdout)
    assert payload["usage"]["chunked_documents"] == 1 and payload["usage"]["truncated_documents"] == 0
    span = payload["results"][0]["span"]
    assert 0 <= span["start"] < span["end"] <= len(long)
    out = run_cli(*args, "--aggregate", "first")
    assert out.exit_code == 0, out.stderr
    assert "cut to 128 tokens" in out.stderr
    assert json.loads(out.stdout)["usage"]["truncated_documents"] == 1
    out = run_cli(*args, "--aggregate", "median")
    assert out.exit_code == 2
    assert "aggregate" in out.stderr


def test_bad_jsonl_line_is_named_fake_backend(tmp_path: Path, fake_model_dir: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('"fine"\n{"text": 3}\n')
    out = run_cli("rerank", "q", "-f", str(bad), *fake(fake_model_dir))
    assert out.exit_code == 2
    assert f"{bad}:2" in out.stderr
    assert "Traceback" not in out.stderr


def test_no_documents_fake_backend(fake_model_dir: Path) -> None:
    out = run_cli("rerank", "q", *fake(fake_model_dir), stdin="")
    assert out.exit_code == 2
    assert "no documents given" in out.stderr


def test_missing_model_directory_fake_backend(tmp_path: Path) -> None:
    missing = tmp_path / "models" / "absent"
    out = run_cli("rerank", "q", "d", "-m", str(missing), "--backend", "fake")
    assert out.exit_code == 3
    assert str(missing) in out.stderr
    assert "fix:" in out.stderr and "hf download" in out.stderr
    assert "Traceback" not in out.stderr


def test_bad_environment_setting_fake_backend() -> None:
    out = run_cli("rerank", "q", "d", "--backend", "fake", env={"CROSSRANK_MAX_LENGTH": "lots"})
    assert out.exit_code == 2
    assert "CROSSRANK_MAX_LENGTH" in out.stderr


def test_bad_device_option_fake_backend(fake_model_dir: Path) -> None:
    out = run_cli("rerank", "q", "d", *fake(fake_model_dir), "--device", "gpu")
    assert out.exit_code == 2
    assert "auto, cpu, cuda, cuda:N" in out.stderr


@pytest.mark.slow
def test_check_passes_on_english_and_skips_chinese(english_model_dir: Path) -> None:
    out = crossrank("check", "-m", str(english_model_dir))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "check passed" in out.stdout
    assert "skipped zh" in out.stdout
    assert "device cpu, dtype float32" in out.stdout
    assert "ms per pair" in out.stdout


@pytest.mark.slow
def test_check_json(english_model_dir: Path) -> None:
    out = crossrank("check", "-m", str(english_model_dir), "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["passed"] is True and report["fix"] is None
    assert {c["language"] for c in report["checks"]} == {"en"}
    assert all(c["relevant_score"] > c["irrelevant_score"] for c in report["checks"])
    assert set(report["skipped"]) == {"zh"}
    assert report["load_seconds"] > 0 and report["ms_per_pair"] > 0


@pytest.mark.slow
def test_check_fails_on_a_model_that_cannot_rank(tmp_path: Path, english_model_dir: Path) -> None:
    """A classifier head with zero weights scores everything alike: the smoke test must catch it."""
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "flat-model"
    shutil.copytree(english_model_dir, broken)
    weights = load_file(broken / "model.safetensors")
    weights["classifier.weight"].zero_()
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    out = crossrank("check", "-m", str(broken))
    assert out.returncode == 1
    assert "check failed" in out.stdout
    assert "trained reranker" in out.stderr


@pytest.mark.slow
def test_demo_english(english_model_dir: Path) -> None:
    out = crossrank("demo", "-m", str(english_model_dir))  # auto: the English model cannot read Chinese
    assert out.returncode == 0, out.stderr
    assert "apple iphone price" in out.stdout
    rows = [line for line in out.stdout.splitlines() if "│" in line and "dollars" in line]
    assert rows and rows[0].split("│")[1].strip().startswith("1 (was ")


def test_demo_chinese_fake_backend(fake_model_dir: Path) -> None:
    out = run_cli("demo", "--lang", "zh", "-m", str(fake_model_dir), env={"CROSSRANK_BACKEND": "fake"})
    assert out.exit_code == 0, out.stderr
    assert "苹果手机" in out.stdout and "iPhone 15 Pro" in out.stdout
