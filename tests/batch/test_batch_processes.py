"""`crossrank batch` as a user runs it: a process really killed mid-run resumes exactly; Ray matches local."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from batch_data import make_rows, read_jsonl, write_jsonl

from conftest import subprocess_env

pytestmark = pytest.mark.slow

# One thread per process: the same arithmetic in every process (so outputs can be compared byte for
# byte), and a light load on a 2-core CI machine.
_ENV = {"CROSSRANK_NUM_THREADS": "1", "CROSSRANK_DEVICE": "cpu"}


def _command(source: Path, output: Path, model: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "crossrank", "batch", str(source), str(output), "-m", str(model), "--json", *extra]


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    env_vars = subprocess_env(**_ENV, **env)
    return subprocess.run(args, capture_output=True, text=True, env=env_vars, timeout=600, check=False)


def _input(tmp_path: Path, count: int) -> Path:
    rows: list[object] = list(make_rows(count))
    rows[7] = "{not json"
    rows[30] = {"id": "no-docs", "query": "q"}
    return write_jsonl(tmp_path / "in.jsonl", rows)


def _committed(parts: Path) -> list[Path]:
    return sorted(parts.glob("part-*.jsonl")) if parts.is_dir() else []


def test_resume_after_sigkill_equals_an_uninterrupted_run(tmp_path: Path, english_model_dir: Path) -> None:
    source = _input(tmp_path, 240)
    output, parts = tmp_path / "out.jsonl", tmp_path / "out.jsonl.parts"
    args = _command(source, output, english_model_dir, "--part-rows", "4")  # 60 parts

    child = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=subprocess_env(**_ENV))
    deadline = time.monotonic() + 300
    while len(_committed(parts)) < 3 and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    child.communicate()
    assert child.returncode == -signal.SIGKILL
    done = len(_committed(parts))
    assert 3 <= done < 60, f"the run was not stopped mid-way ({done} of 60 parts done)"
    assert not output.exists()

    refused = _run(_command(source, output, english_model_dir, "--part-rows", "4", "--max-length", "256"))
    assert refused.returncode == 2
    assert "unfinished run started with other arguments" in refused.stderr
    assert re.search(r"max[_-]length: 512 then, 256 now", refused.stderr)  # CLI words (--max-length) in the CLI

    resumed = _run(args)
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    assert report["resumed_parts"] == done
    assert report["input_rows"] == 240 - 4 * done
    assert (report["rows"], report["bad_rows"]) == (238, 2)

    fresh = _run(_command(source, tmp_path / "fresh.jsonl", english_model_dir, "--part-rows", "4"))
    assert fresh.returncode == 0, fresh.stderr
    assert output.read_bytes() == (tmp_path / "fresh.jsonl").read_bytes()
    ids = [r["id"] for r in read_jsonl(output)]
    assert len(ids) == len(set(ids)) == 238
    assert (tmp_path / "out.errors.jsonl").read_bytes() == (tmp_path / "fresh.errors.jsonl").read_bytes()
    assert [e["line"] for e in read_jsonl(tmp_path / "out.errors.jsonl")] == [8, 31]
    assert not parts.exists()


def test_ray_engine_with_two_actors_equals_the_local_engine(tmp_path: Path, tiny_qwen3_dir: Path) -> None:
    """On a decoder reranker with an instruction: the actors build their rerankers from the same options (the
    family, the instruction) as the local engine does, for any kind of model."""
    pytest.importorskip("ray")
    source = _input(tmp_path, 40)
    common = ["--part-rows", "3", "--instruction", "Find the passage that answers", "--dtype", "float32"]
    local = _run(_command(source, tmp_path / "local.jsonl", tiny_qwen3_dir, *common))
    assert local.returncode == 0, local.stderr
    ray_args = ["--engine", "ray", "--actors", "2", "--num-cpus", "0.5", *common]
    on_ray = _run(_command(source, tmp_path / "ray.jsonl", tiny_qwen3_dir, *ray_args), RAY_AUTH_MODE="disabled")
    assert on_ray.returncode == 0, on_ray.stderr
    report = json.loads(on_ray.stdout.strip().splitlines()[-1])
    assert (report["engine"], report["rows"], report["bad_rows"]) == ("ray", 38, 2)
    assert (tmp_path / "ray.jsonl").read_bytes() == (tmp_path / "local.jsonl").read_bytes()
    assert (tmp_path / "ray.errors.jsonl").read_bytes() == (tmp_path / "local.errors.jsonl").read_bytes()
