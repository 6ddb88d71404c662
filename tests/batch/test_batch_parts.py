"""The work folder: committed parts are the checkpoint; other arguments are refused only when work would be lost."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from crossrank import ConfigError
from crossrank.batch.parts import WorkDir


def test_committed_parts_are_found_again_and_leftovers_ignored(tmp_path: Path) -> None:
    work = WorkDir(tmp_path / "out.jsonl")
    assert work.open({"model": "a"}, overwrite=False) == set()
    work.commit(0, [{"id": "1"}, {"id": "2"}], [])
    work.commit(2, [{"id": "5"}], [{"line": 6, "id": None, "reason": "x"}])
    (work.path / "part-000001.jsonl.tmp").write_text('{"id": "half')  # a write cut short by a kill
    work.release()  # the run ends (or is killed): its lock goes with it
    assert WorkDir(tmp_path / "out.jsonl").open({"model": "a"}, overwrite=False) == {0, 2}
    assert work.part_path(0).read_text() == '{"id":"1"}\n{"id":"2"}\n'
    assert work.errors_path(2).read_text() == '{"line":6,"id":null,"reason":"x"}\n'


def test_other_arguments_are_refused_with_the_difference(tmp_path: Path) -> None:
    work = WorkDir(tmp_path / "out.jsonl")
    work.open({"model": "a", "max_length": 512}, overwrite=False)
    work.commit(0, [{"id": "1"}], [])
    with pytest.raises(ConfigError, match="max_length: 512 then, 256 now") as caught:
        work.open({"model": "a", "max_length": 256}, overwrite=False)
    assert "--overwrite" in str(caught.value)
    assert work.open({"model": "a", "max_length": 256}, overwrite=True) == set()


def test_a_part_scored_in_another_precision_is_refused_not_mixed_in(tmp_path: Path) -> None:
    """Ray's actors resolve dtype="auto" each on its own node: every part must have been scored like the first."""
    work = WorkDir(tmp_path / "out.jsonl")
    work.open({"model": "a", "dtype": "auto"}, overwrite=False)
    bfloat16, float32 = {"model": "a", "dtype": "bfloat16"}, {"model": "a", "dtype": "float32"}
    work.commit(0, [{"id": "1"}], [], bfloat16)
    work.commit(1, [{"id": "2"}], [], bfloat16)
    with pytest.raises(ConfigError, match="dtype: 'bfloat16' before, 'float32' now") as caught:
        work.commit(2, [{"id": "3"}], [], float32)
    assert "--dtype bfloat16" in caught.value.fix
    assert not work.part_path(2).exists()  # refused, not written
    work.release()
    resumed = WorkDir(tmp_path / "out.jsonl")  # a resumed run on other nodes is held to the same
    assert resumed.open({"model": "a", "dtype": "auto"}, overwrite=False) == {0, 1}
    with pytest.raises(ConfigError, match="part 2 of"):
        resumed.commit(2, [{"id": "3"}], [], float32)
    resumed.commit(2, [{"id": "3"}], [], bfloat16)
    # The fix it names: the precision given, with --overwrite, starts over and forgets the first part's.
    assert resumed.open({"model": "a", "dtype": "float32"}, overwrite=True) == set()
    resumed.commit(0, [{"id": "1"}], [], float32)


def test_a_run_that_committed_nothing_starts_over_with_new_arguments(tmp_path: Path) -> None:
    work = WorkDir(tmp_path / "out.jsonl")
    work.open({"model": "typo"}, overwrite=False)  # e.g. the model then failed to load
    assert work.open({"model": "right"}, overwrite=False) == set()
    assert '"right"' in (work.path / "state.json").read_text()


def test_the_lock_refuses_a_second_holder_and_survives_starting_over(tmp_path: Path) -> None:
    first = WorkDir(tmp_path / "out.jsonl")
    first.open({"model": "a"}, overwrite=False)
    first.commit(0, [{"id": "1"}], [])
    second = WorkDir(tmp_path / "out.jsonl")
    with pytest.raises(ConfigError, match=rf"pid {os.getpid()}\b") as caught:
        second.open({"model": "a"}, overwrite=False)
    assert caught.value.fix is not None and str(os.getpid()) in caught.value.fix
    # Starting over with other arguments clears the folder but keeps the lock held.
    assert first.open({"model": "b"}, overwrite=True) == set()
    with pytest.raises(ConfigError, match="another batch run"):
        second.lock()
    first.release()
    assert second.open({"model": "b"}, overwrite=False) == set()
    second.remove()
    assert not second.path.exists()


def test_a_work_folder_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "out.jsonl.parts").symlink_to(elsewhere)
    with pytest.raises(ConfigError, match="not a folder"):
        WorkDir(tmp_path / "out.jsonl").lock()
    assert list(elsewhere.iterdir()) == []
