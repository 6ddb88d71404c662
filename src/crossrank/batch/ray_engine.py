"""The Ray engine: the local engine's parts, read by Ray Data tasks and scored by an actor pool (one model each).

Imported only for ``engine="ray"``, so the CLI and the local engine never load Ray. Each part
travels as one row (its checked input rows as JSON) and is scored whole by one actor with the
same function as the local engine, so the scores, ranks and bad rows are exactly the local
engine's; parts come back to the driver (small: ids and scores), which commits them to the work
folder as they arrive, which is what makes a Ray run resumable too. The input file must be
readable at the same path on every node (shared storage).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from typing import Any

import ray
import ray.data
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from crossrank.batch.files import RowReader, Source, pyarrow
from crossrank.batch.rows import BadRow, Job, process
from crossrank.batch.runner import PartResult, RayOptions
from crossrank.config import RerankerOptions
from crossrank.errors import ConfigError
from crossrank.reranker import Reranker

__all__ = ["ray_parts"]

# Consecutive parts per read task: few enough that every actor gets work, enough that a Parquet
# row group is not read again for every part.
_MAX_PARTS_PER_TASK = 16
# CPUs a read task reserves: reading and checking rows is light next to scoring them.
_READ_CPUS = 0.25


def _encode(items: Sequence[Job | BadRow]) -> str:
    return json.dumps([asdict(item) for item in items], ensure_ascii=False)


def _decode(text: str) -> list[Job | BadRow]:
    records: list[dict[str, Any]] = json.loads(text)
    return [
        BadRow(**r) if "reason" in r else Job(r["line"], r["id"], r["query"], tuple(r["documents"])) for r in records
    ]


def _read_parts(source: Source, parts: Sequence[int]) -> Iterator[Any]:
    pa, reader = pyarrow(), RowReader(source)
    for part in parts:
        yield pa.table({"part": [part], "items": [_encode(reader.part(part))]})


class _PartsDatasource(Datasource):
    """The pending parts of an input, a few consecutive parts per read task."""

    def __init__(self, source: Source, pending: Sequence[int], actors: int) -> None:
        self._source, self._pending, self._actors = source, list(pending), actors

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(
        self, parallelism: int, per_task_row_limit: int | None = None, data_context: Any = None
    ) -> list[ReadTask]:
        per_task = max(1, min(_MAX_PARTS_PER_TASK, math.ceil(len(self._pending) / (4 * self._actors))))
        groups = [self._pending[i : i + per_task] for i in range(0, len(self._pending), per_task)]
        return [
            ReadTask(
                functools.partial(_read_parts, self._source, group),
                BlockMetadata(num_rows=len(group), size_bytes=None, exec_stats=None, input_files=None),
            )
            for group in groups
        ]


class _ScoreActor:
    """One Ray actor: loads the model once, then scores whole parts."""

    def __init__(self, options: RerankerOptions) -> None:
        self._reranker = Reranker.from_options(options)
        # What this actor resolved (dtype="auto" measures its own node): the driver keeps every part alike.
        self._scoring = json.dumps(self._reranker.fingerprint().values, sort_keys=True)

    def __call__(self, batch: Any) -> Any:
        parts, rows, errors = [], [], []
        for record in batch.to_pylist():
            out, bad = process(self._reranker, _decode(record["items"]))
            parts.append(record["part"])
            rows.append(json.dumps(out, ensure_ascii=False))
            errors.append(json.dumps(bad, ensure_ascii=False))
        table = {"part": parts, "rows": rows, "errors": errors, "scoring": [self._scoring] * len(parts)}
        return pyarrow().table(table)


def _connect(options: RayOptions) -> bool:
    """Join ``options.address`` or start a local runtime; True when this call started it (and must shut it down)."""
    if ray.is_initialized():
        return False
    common: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
    if options.address is not None:
        try:
            ray.init(address=options.address, **common)
        except (ConnectionError, RuntimeError) as exc:
            raise ConfigError(
                f"cannot connect to the Ray cluster at {options.address}: {exc}",
                fix="check the address (ray://HEAD:10001, HEAD:6379 or auto) and that `ray status` works there",
            ) from None
        return True
    cpus = max(os.cpu_count() or 1, math.ceil(options.actors * options.num_cpus + _READ_CPUS))
    ray.init(num_cpus=cpus, object_store_memory=options.object_store_memory, **common)
    return True


def ray_parts(
    source: Source, pending: Sequence[int], reranker_options: RerankerOptions, options: RayOptions
) -> Iterator[PartResult]:
    """Score ``pending`` parts on Ray; yields each part's output rows and error records as it completes."""
    if not pending:
        return
    if options.actors < 1:
        raise ConfigError(f"actors must be at least 1, got {options.actors}")
    started = _connect(options)
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the caller shows one progress bar for the whole run
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        dataset = ray.data.read_datasource(
            _PartsDatasource(source, pending, options.actors), num_cpus=_READ_CPUS
        ).map_batches(
            _ScoreActor,
            fn_constructor_kwargs={"options": reranker_options},
            batch_size=1,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=options.actors),
            num_cpus=options.num_cpus,
            num_gpus=options.num_gpus,
        )
        for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
            for record in batch.to_pylist():
                scoring = json.loads(record["scoring"])
                yield record["part"], json.loads(record["rows"]), json.loads(record["errors"]), scoring
    finally:
        if started:
            ray.shutdown()
