"""Run the reliability tests and write RELIABILITY.md from the figures they record.

    python benchmarks/reliability.py            # runs tests/reliability, rewrites RELIABILITY.md
    python benchmarks/reliability.py --check    # the same, but exits 1 when any test failed (the table says which)

Each test in tests/reliability calls the ``record_figures`` fixture with its parameters and measurements; this
script sets CROSSRANK_RELIABILITY_OUT so they are collected, then renders one table row per test. The file's other
``## `` sections (figures of other benchmarks, e.g. benchmarks/admission.py and big_body.py) are kept.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cell(values: dict[str, Any]) -> str:
    return "<br>".join(f"{k}: {v}" for k, v in values.items()).replace("|", "\\|")


def _pip_audit() -> str:
    """The dependency audit's verdict (.ci/audit.py, which CI runs too), as text."""
    done = subprocess.run([sys.executable, str(REPO / ".ci" / "audit.py")], capture_output=True, text=True, check=False)
    return (done.stdout + done.stderr).strip() or f"the audit exited {done.returncode} with no output"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "RELIABILITY.md")
    parser.add_argument("--check", action="store_true", help="exit 1 when a reliability test failed")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (e.g. -k soak)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        figures_file = Path(tmp) / "figures.jsonl"
        junit = Path(tmp) / "junit.xml"
        started = datetime.datetime.now(datetime.timezone.utc)
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}"]
        command += ["tests/reliability", *args.pytest_args]
        env = {**os.environ, "CROSSRANK_RELIABILITY_OUT": str(figures_file)}
        done = subprocess.run(command, cwd=REPO, env=env, check=False)
        rows = [json.loads(line) for line in figures_file.read_text().splitlines()] if figures_file.exists() else []
        outcomes = _outcomes(junit)

    lines = [
        "# Reliability",
        "",
        "Produced by `python benchmarks/reliability.py` (it runs `pytest tests/reliability` and collects what each",
        "test measured). Every figure below is asserted against its bound in the test itself; CI runs the same tests.",
        "",
        f"Last run: {started:%Y-%m-%d %H:%M} UTC on {_cpu_model()} ({os.cpu_count()} CPUs), "
        f"Python {platform.python_version()}; pytest exit code {done.returncode}.",
        "",
        "| test | what it checks | parameters | measured | result |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        name = row["test"].split("::")[-1]
        lines.append(
            f"| `{name}` | {row['what']} | {_cell(row['parameters'])} | {_cell(row['figures'])} "
            f"| {outcomes.get(row['test'], '?')} |"
        )
    recorded = {row["test"] for row in rows}
    for test, outcome in sorted(outcomes.items()):
        if test not in recorded:
            lines.append(f"| `{test.split('::')[-1]}` | (no figures recorded) | | | {outcome} |")
    lines += ["", _AUDIT, "", _AUDIT_SCOPE, "", "```", _pip_audit(), "```", ""]
    args.out.write_text("\n".join(lines) + _kept_sections(args.out))
    print(f"wrote {args.out}")
    return 1 if args.check and done.returncode != 0 else 0


_AUDIT = "## Dependency audit (pip-audit)"
# What the audit does and does not check, written above its verdict (the same words as .ci/run's comment).
_AUDIT_SCOPE = """\
`.ci/audit.py` runs pip-audit over the installed Python packages and fails CI only when it finds a known
vulnerability in a package it could look up. What it checks depends on where it runs:

- **Checked** where PyPI's JSON API is reachable: each installed PyPI distribution, at its installed version,
  against the advisories PyPI serves.
- **Not checked on these CI machines**: anything. They reach only the package index's file pages, so every
  package comes back "not found" (`0 packages audited`); the audit then cannot fail and says "report-only". A
  green CI run here says nothing about vulnerabilities: run `python .ci/audit.py` where PyPI is reachable.
- **Never checked**: crossrank itself (installed editable, skipped), libraries bundled inside wheels (torch's
  CUDA and oneDNN, onnxruntime's), and what is not a Python package (redis-server, the OS, the NVIDIA driver)."""


def _kept_sections(path: Path) -> str:
    """The ``## `` sections of ``path`` that this script does not write (figures measured by other benchmarks)."""
    if not path.is_file():
        return ""
    text = path.read_text()
    sections = ["## " + part for part in text.split("\n## ")[1:]]
    return "".join("\n" + part.rstrip("\n") + "\n" for part in sections if not part.startswith(_AUDIT))


def _outcomes(junit: Path) -> dict[str, str]:
    """Node id → passed/failed/skipped, from pytest's JUnit XML."""
    import xml.etree.ElementTree as ET

    if not junit.exists():
        return {}
    outcomes: dict[str, str] = {}
    for case in ET.parse(junit).iter("testcase"):
        path = case.get("classname", "").replace(".", "/")
        node = f"{path}.py::{case.get('name')}"
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed"
            elif child.tag == "skipped":
                outcome = "skipped"
        outcomes[node] = outcome
    return outcomes


if __name__ == "__main__":
    sys.exit(main())
