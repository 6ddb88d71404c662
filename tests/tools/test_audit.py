"""The dependency audit says exactly what it checked: nothing, on machines where PyPI's JSON API is out of reach."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reliability_md_and_ci_say_what_the_audit_does_not_check() -> None:
    scope = _load(REPO / "benchmarks" / "reliability.py")._AUDIT_SCOPE
    assert "0 packages audited" in scope and "Never checked" in scope
    section = (REPO / "RELIABILITY.md").read_text().split("## Dependency audit (pip-audit)\n", 1)[1]
    assert section.startswith(f"\n{scope}\n")  # as benchmarks/reliability.py writes it
    run = (REPO / ".ci" / "run").read_text().splitlines()
    comment = run[run.index("python3 .ci/audit.py") - 1]
    assert "only on a known vulnerability in a package it could look up" in comment
    assert "looks up none, cannot fail, and says so" in comment


def test_an_audit_that_looked_up_nothing_passes_but_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    audit = _load(REPO / ".ci" / "audit.py")
    skipped = [{"name": f"p{i}", "version": "1", "skip_reason": "Dependency not found on PyPI"} for i in range(3)]

    def fake_run(command: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        Path(command[command.index("-o") + 1]).write_text(json.dumps({"dependencies": skipped}))
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(audit.subprocess, "run", fake_run)
    monkeypatch.setattr("sys.argv", ["audit.py"])
    assert audit.main() == 0
    out = capsys.readouterr().out
    assert "report-only" in out and "0 packages audited, 3 skipped" in out
    assert "cannot fail CI" in out
