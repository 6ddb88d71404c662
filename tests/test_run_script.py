"""tests/run.py, the suite's one command: its two phases' marker expressions and its exit status."""

from __future__ import annotations

import pytest

from run import NO_TESTS, _combined, _phases


def _marker(command: list[str]) -> str:
    options = command[command.index("pytest") + 1 :]  # after `python -m pytest`
    assert options.count("-m") == 1
    return options[options.index("-m") + 1]


@pytest.mark.parametrize(
    ("args", "parallel", "serial"),
    [
        ([], "not serial", "serial"),
        (["-m", "not slow", "-x"], "(not slow) and not serial", "(not slow) and serial"),
        (["-mslow or gpu"], "(slow or gpu) and not serial", "(slow or gpu) and serial"),
        (["-m", "a", "-m", "b"], "(b) and not serial", "(b) and serial"),  # pytest keeps the last -m too
    ],
)
def test_each_phase_gets_the_users_marker_and_its_own(args: list[str], parallel: str, serial: str) -> None:
    first, second = _phases(args, 3)
    assert (_marker(first), _marker(second)) == (parallel, serial)
    assert first[first.index("-n") + 1] == "3" and "no:xdist" in second
    assert "-x" in first and "-x" in second if "-x" in args else "-x" not in first


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([0, 0], 0),
        ([0, NO_TESTS], 0),  # e.g. `tests/unit`: no serial test there
        ([NO_TESTS, 0], 0),
        ([NO_TESTS, NO_TESTS], NO_TESTS),  # nothing collected is a failure in CI
        ([1, 0], 1),
        ([0, 1], 1),
        ([NO_TESTS, 2], 2),
        ([2, 1], 2),
    ],
)
def test_the_exit_status_is_the_first_failing_phases(statuses: list[int], expected: int) -> None:
    assert _combined(statuses) == expected
