"""The work folder of a batch run: committed parts are the checkpoint, so a killed run resumes exactly.

``OUT.parts/`` holds ``state.json`` (what the run was started with) and, per finished part ``k``,
``errors-k.jsonl`` then ``part-k.jsonl``, each written to a temporary file, fsync'd and renamed.
A part counts as done only once ``part-k.jsonl`` exists, so a part cut short by a kill is simply
done again: no row is lost or written twice. When every part is done they are concatenated into
``OUT`` (and the errors file), atomically, and the folder is removed.

One run at a time works in a folder: it holds an exclusive ``flock`` on ``OUT.parts/lock`` (which records its
pid) from before the model loads until the output is in place; a second run on the same output is refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from crossrank.batch.files import write_atomic
from crossrank.errors import ConfigError

__all__ = ["WorkDir"]

_PART = re.compile(r"part-(\d+)\.jsonl")
_LOCK = "lock"
# The fingerprint the first committed part was scored with (Ray runs; see WorkDir.commit).
_SCORING = "scoring.json"


def _jsonl(records: Sequence[dict[str, Any]]) -> list[str]:
    return [json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records]


def _count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for _ in handle)


class WorkDir:
    """``OUT.parts/``: the state of a run and its committed parts."""

    def __init__(self, output: Path) -> None:
        self.output = output
        self.path = output.with_name(output.name + ".parts")
        self._lock: int | None = None

    def lock(self) -> None:
        """Take the folder's lock (creating the folder), or refuse: another run, named by its pid, holds it."""
        if self.path.is_symlink() or (self.path.exists() and not self.path.is_dir()):
            raise ConfigError(
                f"{self.path}, where a batch run keeps its work, is not a folder (a symbolic link or a file)",
                fix=f"remove {self.path}, or choose another output",
            )
        lock = self.path / _LOCK
        while True:
            self.path.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            except FileNotFoundError:
                continue  # the folder was removed by a run that just finished: make it again
            except OSError as exc:
                raise ConfigError(
                    f"cannot take the lock {lock} of this output's work folder ({exc.strerror})",
                    fix=f"remove {self.path}, or choose another output",
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                raise ConfigError(
                    f"another batch run (pid {holder}) is writing {self.output}; two runs on one output would "
                    "mix their rows",
                    fix=f"wait for pid {holder} to finish, or stop it and run again to resume where it stopped",
                ) from None
            # A run that finished between our open() and flock() removed the folder: our lock is on a lost file.
            try:
                same = os.stat(lock, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._lock = fd

    def __enter__(self) -> WorkDir:
        self.lock()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def release(self) -> None:
        """Give the lock back; a folder that holds nothing but the lock (no run started in it) is removed."""
        if self._lock is None:
            return
        with contextlib.suppress(OSError):
            if [p.name for p in self.path.iterdir()] == [_LOCK]:
                shutil.rmtree(self.path)
        os.close(self._lock)
        self._lock = None

    def part_path(self, part: int) -> Path:
        return self.path / f"part-{part:06d}.jsonl"

    def errors_path(self, part: int) -> Path:
        return self.path / f"errors-{part:06d}.jsonl"

    def open(self, fingerprint: dict[str, Any], *, overwrite: bool) -> set[int]:
        """Start or resume a run; returns the parts already done. Refuses a run started with other arguments.

        Takes the lock first unless ``lock()`` was called already.
        """
        if self._lock is None:
            self.lock()
        state = self.path / "state.json"
        if state.is_file():
            before = json.loads(state.read_text(encoding="utf-8"))
            # Nothing committed yet (e.g. the model failed to load): nothing to lose by starting over.
            if before != fingerprint and not overwrite and self._done():
                changed = sorted(k for k in before.keys() | fingerprint.keys() if before.get(k) != fingerprint.get(k))
                details = "; ".join(f"{k}: {before.get(k)!r} then, {fingerprint.get(k)!r} now" for k in changed)
                raise ConfigError(
                    f"{self.path} holds an unfinished run started with other arguments ({details}), "
                    "so its rows cannot be resumed",
                    fix=f"rerun with the same arguments to resume it, or pass --overwrite (overwrite=True) "
                    f"to discard it, or delete {self.path}",
                )
            if before != fingerprint:
                self._clear()
        if not state.is_file():
            write_atomic(state, [json.dumps(fingerprint, indent=1, sort_keys=True) + "\n"])
        return self._done()

    def _done(self) -> set[int]:
        return {int(m.group(1)) for p in self.path.iterdir() if (m := _PART.fullmatch(p.name))}

    def commit(
        self,
        part: int,
        rows: Sequence[dict[str, Any]],
        errors: Sequence[dict[str, Any]],
        scoring: Mapping[str, Any] | None = None,
    ) -> None:
        """Record part ``part`` as done; its errors first, so a done part always has them.

        ``scoring``: the fingerprint the part was scored with, where the run's own could not resolve it (Ray's actors
        each resolve ``dtype="auto"`` on their own machine). The first part's is kept, and a part scored otherwise
        (another precision on another kind of node, in this run or a resumed one) is refused, not mixed in.
        """
        if scoring is not None:
            self._check_scoring(part, scoring)
        write_atomic(self.errors_path(part), _jsonl(errors))
        write_atomic(self.part_path(part), _jsonl(rows))

    def _check_scoring(self, part: int, scoring: Mapping[str, Any]) -> None:
        path = self.path / _SCORING
        if not path.is_file():
            write_atomic(path, [json.dumps(dict(scoring), indent=1, sort_keys=True) + "\n"])
            return
        first = json.loads(path.read_text(encoding="utf-8"))
        changed = sorted(k for k in first.keys() | scoring.keys() if first.get(k) != scoring.get(k))
        if changed:
            details = "; ".join(f"{k}: {first.get(k)!r} before, {scoring.get(k)!r} now" for k in changed)
            raise ConfigError(
                f"part {part} of {self.output} was scored otherwise than the parts before it ({details}): "
                "nodes that resolve dtype='auto' differently would mix precisions in one output",
                fix=f"pass --dtype {first.get('dtype', 'float32')} (dtype=...) so that every node runs the same, with "
                "--overwrite to score every part in it, or run on nodes of one kind to resume",
            )

    def counts(self, parts: int) -> tuple[int, int]:
        """Output rows and bad rows committed in parts ``0 .. parts - 1``."""
        rows = sum(_count_lines(self.part_path(k)) for k in range(parts))
        bad = sum(_count_lines(self.errors_path(k)) for k in range(parts))
        return rows, bad

    def _clear(self) -> None:
        """Delete everything but the lock (which this run holds)."""
        for entry in self.path.iterdir():
            if entry.name == _LOCK:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    def remove(self) -> None:
        """Delete the folder (the run is complete) and give the lock back."""
        shutil.rmtree(self.path)
        self.release()
