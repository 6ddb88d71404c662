"""The whole test suite in one command: the tests that measure no time spread over the CPUs, then the ``serial`` ones.

    python tests/run.py                  # what CI runs
    python tests/run.py -m "not slow"    # any pytest arguments; -m is combined with each phase's marker

Most slow tests wait on child processes (servers, workers, CLI runs) importing torch and loading a model, so two
pytest-xdist workers overlap them even on 2 cores. Tests marked ``serial`` measure latency, memory or load figures
(tests/reliability's load, soak and overload runs, a few time bounds in tests/server): they run afterwards, alone on
the machine, in one process. Workers default to the CPU count, at most 4 (each worker starts its own session
fixtures, servers included); CROSSRANK_TEST_WORKERS overrides it. The exit status is pytest's: the first failing
phase's, 5 only when neither phase collected a test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NO_TESTS = 5  # pytest's exit status when it collected nothing


def _split_marker(args: Sequence[str]) -> tuple[list[str], str | None]:
    """The arguments without ``-m EXPR`` (or ``-mEXPR``), and that expression (the last, as pytest keeps it)."""
    rest: list[str] = []
    marker = None
    items = iter(args)
    for arg in items:
        if arg == "-m":
            marker = next(items, "")
        elif arg.startswith("-m") and not arg.startswith("--"):
            marker = arg[2:]
        else:
            rest.append(arg)
    return rest, marker


def _phases(args: Sequence[str], workers: int) -> list[list[str]]:
    rest, marker = _split_marker(args)
    expression = f"({marker}) and " if marker else ""
    pytest = [sys.executable, "-m", "pytest"]
    return [
        [*pytest, "-n", str(workers), "--dist", "loadfile", "-m", f"{expression}not serial", *rest],
        [*pytest, "-p", "no:xdist", "-m", f"{expression}serial", *rest],
    ]


def _combined(statuses: Sequence[int]) -> int:
    failed = [s for s in statuses if s not in (0, NO_TESTS)]
    if failed:
        return failed[0]
    return NO_TESTS if all(s == NO_TESTS for s in statuses) else 0


def main(args: Sequence[str]) -> int:
    workers = int(os.environ.get("CROSSRANK_TEST_WORKERS") or min(os.cpu_count() or 1, 4))
    return _combined([subprocess.call(command, cwd=REPO) for command in _phases(args, workers)])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
