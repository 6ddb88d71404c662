"""Batch files: input formats, reading an input one part (a fixed range of rows) at a time, writing the output.

Parts are the unit of work, of checkpointing and of scoring: part ``k`` is input rows
``[k * part_rows, (k + 1) * part_rows)`` (JSONL: physical lines, blank ones included and skipped;
Parquet: rows), so a part means the same rows on every run and on every engine.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO, Literal

from crossrank.batch.rows import BadRow, Job, parse_row
from crossrank.errors import ConfigError, InputError

__all__ = ["Format", "RowReader", "Source", "detect_format", "pyarrow", "scan", "write_atomic", "write_output"]

Format = Literal["jsonl", "parquet"]
_SUFFIXES: dict[str, Format] = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet"}


def pyarrow(module: str = "pyarrow") -> ModuleType:
    """Import pyarrow (or ``pyarrow.parquet``) on first use, or say which extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            "Parquet files need pyarrow, which is not installed", fix="pip install 'crossrank[batch]'"
        ) from None


def detect_format(path: Path, given: str | None, what: str) -> Format:
    """The file's format from ``given`` (``--format``) or its extension."""
    if given is not None:
        if given not in ("jsonl", "parquet"):
            raise ConfigError(f"{what} format must be jsonl or parquet, got {given!r}")
        return given  # type: ignore[return-value]  # checked just above
    found = _SUFFIXES.get(path.suffix.lower())
    if found is None:
        raise ConfigError(
            f"cannot tell the format of {what} {path} from its extension",
            fix="name it .jsonl or .parquet, or pass the format (--input-format / --format jsonl|parquet)",
        )
    return found


@dataclass(frozen=True, slots=True)
class Source:
    """An input file scanned once: how many rows it has and where each part starts.

    Attributes:
        path: the file.
        format: ``jsonl`` or ``parquet``.
        total_rows: JSONL lines (blank ones included) or Parquet rows.
        part_rows: rows per part.
        offsets: JSONL only: the byte offset of each part's first line.
    """

    path: Path
    format: Format
    total_rows: int
    part_rows: int
    offsets: tuple[int, ...] = ()

    @property
    def parts(self) -> int:
        """Number of parts (the last one may be short)."""
        return -(-self.total_rows // self.part_rows)

    def rows_in(self, part: int) -> int:
        """Input rows that part ``part`` covers."""
        return min(self.part_rows, self.total_rows - part * self.part_rows)

    def identity(self) -> dict[str, Any]:
        """What says the input is still the same file (for the resume check)."""
        stat = self.path.stat()
        return {"input": str(self.path.resolve()), "input_size": stat.st_size, "input_mtime_ns": stat.st_mtime_ns}


def scan(path: Path, fmt: Format, part_rows: int) -> Source:
    """Count the rows of ``path`` (one streaming pass for JSONL, the footer for Parquet)."""
    if not path.is_file():
        raise InputError(f"no such input file: {path}")
    if part_rows < 1:
        raise ConfigError(f"part_rows must be at least 1, got {part_rows}")
    if fmt == "parquet":
        try:
            total = pyarrow("pyarrow.parquet").ParquetFile(path).metadata.num_rows
        except pyarrow().ArrowInvalid as exc:
            raise InputError(f"{path} is not a readable Parquet file: {exc}") from None
        return Source(path, fmt, total, part_rows)
    offsets, position, lines = [], 0, 0
    with path.open("rb") as handle:
        for line in handle:
            if lines % part_rows == 0:
                offsets.append(position)
            position += len(line)
            lines += 1
    return Source(path, fmt, lines, part_rows, tuple(offsets))


class RowReader:
    """Reads one part of a source at a time, as checked jobs and bad rows (blank JSONL lines are skipped)."""

    def __init__(self, source: Source) -> None:
        self.source = source
        # Parquet: the last row group read, kept because consecutive parts usually share one.
        self._group: tuple[int, Any] | None = None

    def part(self, part: int) -> list[Job | BadRow]:
        """Part ``part``'s rows, in input order."""
        start = part * self.source.part_rows
        stop = start + self.source.rows_in(part)
        rows = self._jsonl(part, stop - start) if self.source.format == "jsonl" else self._parquet(start, stop)
        return [parse_row(raw, line) if not isinstance(raw, BadRow) else raw for line, raw in rows]

    def _jsonl(self, part: int, count: int) -> Iterator[tuple[int, object]]:
        first = part * self.source.part_rows + 1
        with self.source.path.open("rb") as handle:
            handle.seek(self.source.offsets[part])
            for line_no in range(first, first + count):
                data = handle.readline()
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError as exc:
                    yield line_no, BadRow(line_no, None, f"not UTF-8: {exc.reason} at byte {exc.start}")
                    continue
                if text.strip():
                    yield line_no, text

    def _parquet(self, start: int, stop: int) -> Iterator[tuple[int, object]]:
        parquet = pyarrow("pyarrow.parquet")
        handle = parquet.ParquetFile(self.source.path)
        wanted = [c for c in ("id", "query", "documents", "document") if c in handle.schema_arrow.names]
        first = 0
        for group in range(handle.metadata.num_row_groups):
            size = handle.metadata.row_group(group).num_rows
            if first < stop and first + size > start:
                if self._group is None or self._group[0] != group:
                    self._group = (group, handle.read_row_group(group, columns=wanted))
                table = self._group[1]
                lo, hi = max(start, first) - first, min(stop, first + size) - first
                for offset, row in enumerate(table.slice(lo, hi - lo).to_pylist()):
                    yield first + lo + offset + 1, row
            first += size


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@functools.cache
def _file_mode() -> int:
    """The mode ``open()`` would give a new file (0o666 less the umask): ``mkstemp`` makes 0o600 ones."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[BinaryIO]:
    """A new file that replaces ``path`` all or nothing: written, fsync'd, renamed over ``path``, folder fsync'd.

    The temporary file gets a unique name from ``mkstemp`` in ``path``'s folder, created with ``O_EXCL``: nothing
    planted there (a symbolic link at a predictable ``OUT.tmp``) is followed or overwritten, and two writers never
    share one. It is removed when the write fails.
    """
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), _file_mode())
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_atomic(path: Path, lines: Iterable[str]) -> None:
    """Write ``lines`` to ``path`` all or nothing (see ``_replacing``)."""
    with _replacing(path) as handle:
        for line in lines:
            handle.write(line.encode("utf-8"))


def _lines(paths: Iterable[Path]) -> Iterator[str]:
    for path in paths:
        with path.open(encoding="utf-8") as handle:
            yield from handle


def _rows(paths: Iterable[Path]) -> Iterator[list[dict[str, Any]]]:
    for path in paths:
        with path.open(encoding="utf-8") as handle:
            yield [json.loads(line) for line in handle]


def write_output(parts: list[Path], output: Path, fmt: Format, schema: Any) -> None:
    """Concatenate the parts (JSONL lines) into ``output`` in ``fmt``, atomically, one part in memory at a time."""
    if fmt == "jsonl":
        write_atomic(output, _lines(parts))
        return
    pa, parquet = pyarrow(), pyarrow("pyarrow.parquet")
    with _replacing(output) as handle, parquet.ParquetWriter(handle, schema) as writer:
        wrote = False
        for rows in _rows(parts):
            if rows:
                writer.write_table(pa.Table.from_pylist(rows, schema=schema))
                wrote = True
        if not wrote:
            writer.write_table(schema.empty_table())
