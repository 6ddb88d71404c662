"""The CLI, run as a user runs it: a subprocess, its output and its exit code."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import subprocess_env
from crossrank import __version__


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


def test_version() -> None:
    out = crossrank("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"crossrank {__version__}"


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


def test_rerank_from_files_and_stdin(tmp_path: Path, english_model_dir: Path) -> None:
    documents = ["Paris is the capital of France", "Berlin has a population of 3.5 million", "bananas are yellow"]
    txt = tmp_path / "docs.txt"
    txt.write_text("\n".join(documents) + "\n\n")
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("\n".join(json.dumps(d if i % 2 else {"text": d}) for i, d in enumerate(documents)))
    runs = [
        crossrank("rerank", "berlin population", "--file", str(txt), "-n", "2", "-m", str(english_model_dir), "--json"),
        crossrank("rerank", "berlin population", "-f", str(jsonl), "-n", "2", "-m", str(english_model_dir), "--json"),
        crossrank(
            "rerank",
            "berlin population",
            "-n",
            "2",
            "--json",
            stdin="\n".join(documents),
            env={"CROSSRANK_MODEL": str(english_model_dir)},
        ),
    ]
    for out in runs:
        assert out.returncode == 0, out.stderr
        results = json.loads(out.stdout)["results"]
        assert results[0]["document"] == documents[1]
        assert len(results) == 2


def test_rerank_table(english_model_dir: Path) -> None:
    out = crossrank("rerank", "what is panda?", "hi", "The giant panda is a bear.", "-m", str(english_model_dir))
    assert out.returncode == 0, out.stderr
    assert out.stdout.index("The giant panda is a bear.") < out.stdout.index(" hi ")
    assert "2 results" in out.stdout


def test_rerank_reports_chunking_and_truncation(english_model_dir: Path) -> None:
    long = "word " * 600
    args = ["rerank", "q", long, "-m", str(english_model_dir), "--max-length", "128", "--json"]
    out = crossrank(*args)
    assert out.returncode == 0, out.stderr
    assert "1 long document(s) were read in windows of 128 tokens" in out.stderr
    payload = json.loads(out.stdout)
    assert payload["usage"]["chunked_documents"] == 1 and payload["usage"]["truncated_documents"] == 0
    span = payload["results"][0]["span"]
    assert 0 <= span["start"] < span["end"] <= len(long)
    out = crossrank(*args, "--aggregate", "first")
    assert out.returncode == 0, out.stderr
    assert "cut to 128 tokens" in out.stderr
    assert json.loads(out.stdout)["usage"]["truncated_documents"] == 1
    out = crossrank(*args, "--aggregate", "median")
    assert out.returncode == 2
    assert "aggregate" in out.stderr


def test_bad_jsonl_line_is_named(tmp_path: Path, english_model_dir: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('"fine"\n{"text": 3}\n')
    out = crossrank("rerank", "q", "-f", str(bad), "-m", str(english_model_dir))
    assert out.returncode == 2
    assert f"{bad}:2" in out.stderr
    assert "Traceback" not in out.stderr


def test_no_documents(english_model_dir: Path) -> None:
    out = crossrank("rerank", "q", "-m", str(english_model_dir))
    assert out.returncode == 2
    assert "no documents given" in out.stderr


def test_missing_model_directory(tmp_path: Path) -> None:
    missing = tmp_path / "models" / "absent"
    out = crossrank("rerank", "q", "d", "-m", str(missing))
    assert out.returncode == 3
    assert str(missing) in out.stderr
    assert "fix:" in out.stderr and "hf download" in out.stderr
    assert "Traceback" not in out.stderr


def test_bad_environment_setting() -> None:
    out = crossrank("rerank", "q", "d", env={"CROSSRANK_MAX_LENGTH": "lots"})
    assert out.returncode == 2
    assert "CROSSRANK_MAX_LENGTH" in out.stderr


def test_bad_device_option(english_model_dir: Path) -> None:
    out = crossrank("rerank", "q", "d", "-m", str(english_model_dir), "--device", "gpu")
    assert out.returncode == 2
    assert "auto, cpu, cuda, cuda:N" in out.stderr


def test_check_passes_on_english_and_skips_chinese(english_model_dir: Path) -> None:
    out = crossrank("check", "-m", str(english_model_dir))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "check passed" in out.stdout
    assert "skipped zh" in out.stdout
    assert "device cpu, dtype float32" in out.stdout
    assert "ms per pair" in out.stdout


def test_check_json(english_model_dir: Path) -> None:
    out = crossrank("check", "-m", str(english_model_dir), "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["passed"] is True and report["fix"] is None
    assert {c["language"] for c in report["checks"]} == {"en"}
    assert all(c["relevant_score"] > c["irrelevant_score"] for c in report["checks"])
    assert set(report["skipped"]) == {"zh"}
    assert report["load_seconds"] > 0 and report["ms_per_pair"] > 0


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


def test_demo_english(english_model_dir: Path) -> None:
    out = crossrank("demo", "-m", str(english_model_dir))  # auto: the English model cannot read Chinese
    assert out.returncode == 0, out.stderr
    assert "apple iphone price" in out.stdout
    rows = [line for line in out.stdout.splitlines() if "│" in line and "dollars" in line]
    assert rows and rows[0].split("│")[1].strip().startswith("1 (was ")


def test_demo_chinese(tiny_xlmr_dir: Path) -> None:
    out = crossrank("demo", "--lang", "zh", "-m", str(tiny_xlmr_dir))
    assert out.returncode == 0, out.stderr
    assert "苹果手机" in out.stdout and "iPhone 15 Pro" in out.stdout
