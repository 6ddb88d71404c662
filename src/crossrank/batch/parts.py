"""The work folder of a batch run: committed parts are the checkpoint, so a killed run resumes exactly.

``OUT.parts/`` holds ``state.json`` (what the run was started with) and, per finished part ``k``,
``errors-k.jsonl`` then ``part-k.jsonl``, each written to a temporary file, fsync'd and renamed.
A part counts as done only once ``part-k.jsonl`` exists, so a part cut short by a kill is simply
done again: no row is lost or written twice. When every part is done they are concatenated into
``OUT`` (and the errors file), atomically, and the folder is removed.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from crossrank.batch.files import write_atomic
from crossrank.errors import ConfigError

__all__ = ["WorkDir"]

_PART = re.compile(r"part-(\d+)\.jsonl")


def _jsonl(records: Sequence[dict[str, Any]]) -> list[str]:
    return [json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records]


def _count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for _ in handle)


class WorkDir:
    """``OUT.parts/``: the state of a run and its committed parts."""

    def __init__(self, output: Path) -> None:
        self.path = output.with_name(output.name + ".parts")

    def part_path(self, part: int) -> Path:
        return self.path / f"part-{part:06d}.jsonl"

    def errors_path(self, part: int) -> Path:
        return self.path / f"errors-{part:06d}.jsonl"

    def open(self, fingerprint: dict[str, Any], *, overwrite: bool) -> set[int]:
        """Start or resume a run; returns the parts already done. Refuses a run started with other arguments."""
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
                shutil.rmtree(self.path)
        if not state.is_file():
            self.path.mkdir(parents=True, exist_ok=True)
            write_atomic(state, [json.dumps(fingerprint, indent=1, sort_keys=True) + "\n"])
        return self._done()

    def _done(self) -> set[int]:
        return {int(m.group(1)) for p in self.path.iterdir() if (m := _PART.fullmatch(p.name))}

    def commit(self, part: int, rows: Sequence[dict[str, Any]], errors: Sequence[dict[str, Any]]) -> None:
        """Record part ``part`` as done; its errors first, so a done part always has them."""
        write_atomic(self.errors_path(part), _jsonl(errors))
        write_atomic(self.part_path(part), _jsonl(rows))

    def counts(self, parts: int) -> tuple[int, int]:
        """Output rows and bad rows committed in parts ``0 .. parts - 1``."""
        rows = sum(_count_lines(self.part_path(k)) for k in range(parts))
        bad = sum(_count_lines(self.errors_path(k)) for k in range(parts))
        return rows, bad

    def remove(self) -> None:
        shutil.rmtree(self.path)
