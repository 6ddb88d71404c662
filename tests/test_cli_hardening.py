"""The CLI at its edges (issue 21): a core install, no network, bad paths and flags, empty inputs, wide tables.

Every test checks the user sees a message, a fix and the documented exit code, never a traceback. Tests named
``..._fake_backend`` run in-process on the fake backend, as in test_cli.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from conftest import subprocess_env
from crossrank.cli import app
from crossrank.evaluate import evaluate, load_cmteb
from crossrank.reranker import Reranker
from crossrank.settings import Settings

# The optional dependencies of every extra: a core install (`pip install crossrank`) has none of them.
EXTRAS = [
    *("uvicorn", "fastapi", "starlette", "prometheus_client", "onnxruntime", "onnx", "celery", "kombu", "redis"),
    *("pyarrow", "ray", "bm25s", "ir_measures", "scipy", "matplotlib", "pynvml"),
]


def run_cli(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, list(args), input=stdin, env={"COLUMNS": "200", **(env or {})})


def fake(model_dir: Path) -> list[str]:
    return ["-m", str(model_dir), "--backend", "fake"]


def assert_reported(out: Result, code: int, *words: str) -> None:
    """Exit ``code``, an ``error:`` line and a ``fix:`` line holding ``words``, no traceback."""
    assert out.exit_code == code, (out.exit_code, out.stdout, out.stderr, out.exception)
    assert out.exception is None or isinstance(out.exception, SystemExit), out.exception
    assert "Traceback" not in out.stderr
    assert "error:" in out.stderr and "fix:" in out.stderr, out.stderr
    for word in words:
        assert word in out.stderr, (word, out.stderr)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- item 0: a core install ------------------------------------------------------------------------------

_WITHOUT_EXTRAS = textwrap.dedent(
    """
    import importlib.abc, json, sys

    BLOCKED = set(sys.argv[1].split())

    class NoExtras(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NoExtras())
    from typer.testing import CliRunner
    from crossrank.cli import app

    results = {}
    for line in sys.argv[2:]:
        out = CliRunner().invoke(app, line.split())
        error = None if out.exception is None or isinstance(out.exception, SystemExit) else repr(out.exception)
        results[line] = [out.exit_code, out.stdout, out.stderr, error]
    print(json.dumps(results))
    """
)


def test_the_cli_starts_without_any_extra() -> None:
    """The CLI imports no extra when it starts; the commands that need one name it (one child process)."""
    lines = ["--version", "--help", "rerank --help", "serve --help", "serve", "worker"]
    child = subprocess.run(
        [sys.executable, "-c", _WITHOUT_EXTRAS, " ".join(EXTRAS), *lines],
        capture_output=True,
        text=True,
        timeout=120,
        env=subprocess_env(COLUMNS="200"),
        check=False,
    )
    assert child.returncode == 0, child.stderr
    results = json.loads(child.stdout.splitlines()[-1])
    for line in ("--version", "--help", "rerank --help", "serve --help"):
        code, _, stderr, error = results[line]
        assert (code, error) == (0, None), (line, stderr, error)
    for line, extra in (("serve", "server"), ("worker", "celery")):
        code, _, stderr, error = results[line]
        assert (code, error) == (2, None), (line, stderr, error)
        assert f"pip install 'crossrank[{extra}]'" in stderr


@pytest.mark.slow
def test_core_install_cli(tmp_path: Path, fake_model_dir: Path) -> None:
    """In a real core-only environment (.ci/run makes one and names its Python in CROSSRANK_CORE_PYTHON)."""
    python = os.environ.get("CROSSRANK_CORE_PYTHON")
    if not python:
        pytest.skip("CROSSRANK_CORE_PYTHON names no core-only environment (.ci/run creates one)")
    probe = f"import importlib.util as u; print([m for m in {EXTRAS!r} if u.find_spec(m)])"
    found = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True, timeout=60).stdout
    assert found.strip() == "[]", f"the core environment has extras: {found}"
    data = tmp_path / "set.jsonl"
    data.write_text(json.dumps({"query": "q", "positive": ["a"], "negative": ["b"]}) + "\n")
    cases: list[tuple[list[str], int, str]] = [
        (["--version"], 0, ""),
        (["rerank", "q", "a", "b", *fake(fake_model_dir)], 0, ""),
        (["serve", *fake(fake_model_dir)], 2, "crossrank[server]"),
        (["worker"], 2, "crossrank[celery]"),
        (["eval", "--data", str(data), *fake(fake_model_dir)], 2, "crossrank[eval]"),
        (["batch", str(data), str(tmp_path / "out.parquet"), *fake(fake_model_dir)], 2, "crossrank[batch]"),
        (["rerank", "q", "a", "-m", str(fake_model_dir), "--backend", "onnx"], 4, "crossrank[onnx]"),
    ]
    for args, code, fix in cases:
        out = subprocess.run(
            [python, "-m", "crossrank", *args], capture_output=True, text=True, timeout=300, check=False
        )
        assert out.returncode == code, (args, out.stderr)
        assert "Traceback" not in out.stderr, (args, out.stderr)
        assert fix in out.stderr, (args, out.stderr)
    for command in ("rerank", "serve", "worker", "check", "demo", "download", "verify", "doctor", "eval", "batch"):
        out = subprocess.run(
            [python, "-m", "crossrank", command, "--help"], capture_output=True, timeout=120, check=False
        )
        assert out.returncode == 0, (command, out.stderr)


# --- items 1 and 2: download without network, verify without a model folder --------------------------


def test_download_without_network_is_a_typed_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from huggingface_hub import constants

    # A closed port on the loopback: the connection is refused at once, as with no network.
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    out = run_cli("download", "BAAI/bge-reranker-v2-m3", "--dir", str(tmp_path / "m"))
    assert_reported(out, 3, "could not reach the Hugging Face hub", "check the network")


def test_verify_without_a_model_folder(tmp_path: Path) -> None:
    text = tmp_path / "docs.txt"
    text.write_text("a document\n")
    empty_cache = {"CROSSRANK_CACHE_DIR": str(tmp_path / "cache")}
    for target, words in (
        (str(tmp_path / "absent"), ["no model folder"]),
        (str(text), ["is a file, not a model folder"]),
        ("BAAI/bge-reranker-v2-m3", ["is not downloaded", "crossrank download BAAI/bge-reranker-v2-m3"]),
    ):
        out = run_cli("verify", target, env=empty_cache)
        # 3: nothing to check, distinct from verify's own 1 (warning) and 2 (broken).
        assert_reported(out, 3, *words)


# --- items 3 and 8: serve's log level and a port in use --------------------------------------------------


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_log_level_is_a_validated_choice(command: str) -> None:
    out = run_cli(command, "--log-level", "loud")
    assert out.exit_code == 2
    assert "loud" in out.stderr and "debug" in out.stderr
    assert out.exception is None or isinstance(out.exception, SystemExit)


def test_port_in_use_has_its_own_exit_code_fake_backend(fake_model_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = run_cli("serve", *fake(fake_model_dir), "--port", str(port))
    assert_reported(out, 5, f"127.0.0.1:{port} is already in use", "--port")


# --- items 4 and 22: eval on empty data, its progress ----------------------------------------------------


def test_eval_on_empty_data_is_an_input_error_fake_backend(tmp_path: Path, fake_model_dir: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "text": "giant panda"}) + "\n")
    (beir / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "panda"}) + "\n")
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n")
    for data, words in (
        (empty, [str(empty), "no queries and no documents"]),
        (beir, [str(beir), "no judged queries"]),
    ):
        out = run_cli("eval", "--data", str(data), *fake(fake_model_dir))
        assert_reported(out, 2, *words)
        assert "max() arg" not in out.stderr


def test_eval_progress_moves_per_query_on_a_small_set(tmp_path: Path, fake_reranker: Reranker) -> None:
    rows = [{"query": f"query {i}", "positive": [f"answer {i}"], "negative": ["other", "more"]} for i in range(5)]
    file = tmp_path / "small.jsonl"
    file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    seen: list[tuple[str, int, int]] = []
    evaluate(load_cmteb(file), fake_reranker, progress=lambda *args: seen.append(args))
    assert [done for _, done, _ in seen] == [0, 3, 6, 9, 12, 15]  # 5 queries of 3 pairs: one step each


# --- items 17 and 18: rerank's notes and document files --------------------------------------------------


def test_a_document_past_the_window_cap_names_max_chunks_per_doc_fake_backend(fake_model_dir: Path) -> None:
    document = "苹果手机的价格和功能介绍。" * 400  # 5,200 characters: far more than 4 windows of 128 tokens
    args = ["rerank", "苹果手机", document, *fake(fake_model_dir), "--max-length", "128", "--max-chunks-per-doc", "4"]
    out = run_cli(*args, "--json")
    assert out.exit_code == 0, out.stderr
    usage = json.loads(out.stdout)["usage"]
    assert (usage["chunks"], usage["truncated_documents"]) == (4, 1)
    assert "read in windows of up to 128 tokens (4 query-window pairs in all)" in out.stderr
    assert "longer than 4 windows (--max-chunks-per-doc) cover" in out.stderr
    assert f"{usage['truncated_tokens']} tokens past the last window were not read" in out.stderr
    assert "raise --max-chunks-per-doc (now 4)" in out.stderr
    assert "--max-length" not in out.stderr.split("longer than")[1]


def test_document_file_problems_are_named_fake_backend(tmp_path: Path, fake_model_dir: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    out = run_cli("rerank", "q", "-f", str(empty), *fake(fake_model_dir))
    assert_reported(out, 2, f"{empty} has no documents")
    assert "no documents given" not in out.stderr
    out = run_cli("rerank", "q", "-f", str(tmp_path), *fake(fake_model_dir))
    assert_reported(out, 2, f"{tmp_path} is a directory")
    assert "no such file" not in out.stderr


# --- item 21: bench's tables and errors ------------------------------------------------------------------


def test_bench_tables_fit_100_columns(capsys: pytest.CaptureFixture[str]) -> None:
    from crossrank.cli._render import print_bench
    from crossrank.tools.bench import BenchReport, SystemResult, _failed

    ok = SystemResult(
        "sentence-transformers-openvino-int8", "torch bfloat16-autocast", 12345.67, 1234567.0, 1234.0, 2345.0,
        3456.0, 0.93, 3 * 2**30, 2**30, 12.3, 14.5, 1200, 12, 1.0, model_tflops=123.45, mfu=0.456, gpu="H100",
    )  # fmt: skip
    failed = _failed("flagembedding", "ImportError: " + "x" * 150)
    machine = {"cpu": "AMD EPYC", "cores": 2, "flags": ["avx2"]}
    workload = {"kind": "rag", "queries": 1, "docs": 2, "document_tokens_min": 1, "document_tokens_max": 2}
    report = BenchReport({}, machine, {**workload, "document_tokens_mean": 1.5, "seed": 0}, [ok, failed])
    print_bench(report)
    printed = capsys.readouterr().out
    table_lines = [line for line in printed.splitlines() if line[:1] in "┏┃┡│└"]
    assert table_lines and max(len(line) for line in table_lines) <= 100
    assert "flagembedding failed: ImportError: " + "x" * 150 in printed  # in full, below the tables


@pytest.mark.slow
def test_bench_reports_a_configuration_error_before_any_table(fake_model_dir: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "crossrank", "bench", *fake(fake_model_dir)[:2], "--backend", "bogus",
         "--queries", "1", "--docs", "2"],
        capture_output=True, text=True, timeout=300, env=subprocess_env(COLUMNS="200"), check=False,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr  # as `crossrank rerank --backend bogus`
    assert "unknown backend 'bogus'" in out.stderr and "fix:" in out.stderr
    assert "┃" not in out.stdout


# --- item 23: CLI words in help and fixes ----------------------------------------------------------------


def test_help_uses_cli_words() -> None:
    top = run_cli("--help")
    assert top.exit_code == 0
    assert "crossrank download" in top.stdout and "on first use" in top.stdout
    assert top.stdout.count("crossrank rerank") >= 2
    rerank = run_cli("rerank", "--help")
    assert "QUERY [DOCUMENTS]..." in rerank.stdout
    assert "--file FILE" in rerank.stdout and "--top-n INTEGER" in rerank.stdout
    for command in ("rerank", "serve", "worker", "check", "demo", "download", "verify", "doctor", "eval", "batch"):
        text = run_cli(command, "--help").stdout
        assert "{" not in text.splitlines()[0], text  # the usage line: QUERY, not {query}
        for python_type in ("<str>", "<int", "<float", "<list[", "<path>", "<bool"):
            assert python_type not in text, (command, python_type)


def test_fixes_are_written_as_flags() -> None:
    from crossrank.cli._help import cli_text

    names = frozenset(Settings.model_fields)
    assert cli_text("pass backend='onnx' or quantize='none'", names) == "pass --backend onnx or --quantize none"
    assert cli_text("pass device='auto', 'cpu' or 'cuda:0'", names) == "pass --device auto, cpu or cuda:0"
    assert cli_text("or raise max_chunks_per_doc", names) == "or raise --max-chunks-per-doc"
    assert cli_text("pass allow_pickle=True (--allow-pickle)", names) == "pass --allow-pickle"
    assert cli_text("at /models/max_length/x, user_id=3", names) == "at /models/max_length/x, user_id=3"


def test_an_error_from_the_library_reads_as_flags_fake_backend(fake_model_dir: Path) -> None:
    out = run_cli("rerank", "q", "d", *fake(fake_model_dir), "--aggregate", "median")
    assert_reported(out, 2, "fix: pass --aggregate max, mean, first")
    assert "aggregate='max'" not in out.stderr
