"""``crossrank.batch.run``: rerank a whole file of rows, locally or on Ray, resumable, bad rows set aside."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from crossrank._version import __version__
from crossrank.batch.files import Source, detect_format, scan, write_output
from crossrank.batch.parts import WorkDir
from crossrank.batch.rows import output_schema, process
from crossrank.config import DEFAULT_MODEL, RerankerOptions
from crossrank.errors import ConfigError
from crossrank.fingerprint import Fingerprint
from crossrank.loader import describe
from crossrank.reranker import Reranker

__all__ = ["BatchReport", "Engine", "PartResult", "ProgressCallback", "RayOptions", "run"]

Engine = Literal["local", "ray"]
ProgressCallback = Callable[[int, int], None]
"""Called with (input rows done, input rows in all) before the first part and after each part."""
PartResult = tuple[int, list[dict[str, Any]], list[dict[str, Any]], dict[str, Any] | None]
"""(part number, its output rows, its error records, the fingerprint it was scored with where the run's own could
not resolve it: Ray's; ``None`` for the local engine, whose loaded model's fingerprint is the run's)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RayOptions:
    """How the Ray engine runs.

    Attributes:
        address: a running cluster (``ray://host:10001``, ``host:6379`` or ``auto``); ``None`` starts a local runtime
            (or uses the one this process already started with ``ray.init``).
        actors: size of the actor pool; each actor loads one model.
        num_cpus: CPUs reserved per actor (Ray also sets the actor's torch threads from it).
        num_gpus: GPUs per actor (``1`` puts each actor's model on its own GPU; fractions share one).
        object_store_memory: bytes for a local runtime's object store (Ray's default when ``None``).
    """

    address: str | None = None
    actors: int = 1
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    object_store_memory: int | None = None


@dataclass(frozen=True, slots=True)
class BatchReport:
    """What a batch run did.

    Attributes:
        output: the output file.
        errors: the errors file (JSONL, one record per bad row; empty when there were none).
        engine: ``local`` or ``ray``.
        rows: output rows written (one per good input row).
        bad_rows: input rows written to the errors file instead.
        parts: parts of the input; ``resumed_parts`` of them were done by an earlier, interrupted run.
        resumed_parts: parts taken over from the interrupted run.
        pairs: (query, document) pairs scored by this run.
        seconds: wall time of this run, from the scan of the input to the output in place (model loading and Ray's
            start included, so short runs show the fixed cost).
        input_rows: input rows (JSONL lines or Parquet rows) this run went through.
    """

    output: Path
    errors: Path
    engine: Engine
    rows: int
    bad_rows: int
    parts: int
    resumed_parts: int
    pairs: int
    seconds: float
    input_rows: int

    @property
    def rows_per_second(self) -> float:
        """Input rows per second of this run (wall time)."""
        return self.input_rows / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (paths as strings)."""
        return {
            "output": str(self.output),
            "errors": str(self.errors),
            "engine": self.engine,
            "rows": self.rows,
            "bad_rows": self.bad_rows,
            "parts": self.parts,
            "resumed_parts": self.resumed_parts,
            "pairs": self.pairs,
            "seconds": round(self.seconds, 3),
            "input_rows": self.input_rows,
            "rows_per_second": round(self.rows_per_second, 2),
            "pairs_per_second": round(self.pairs / self.seconds, 2) if self.seconds > 0 else 0.0,
        }


def default_errors_path(output: Path) -> Path:
    """``out.jsonl`` -> ``out.errors.jsonl``."""
    return output.with_name(f"{output.stem}.errors.jsonl")


def _fingerprint(
    source: Source, output_format: str, errors: Path, scoring: Fingerprint, part_rows: int
) -> dict[str, Any]:
    """What a resumed run must share with the interrupted one: the input, the output's form and what the scores
    depend on (the model's files, backend, precision and every score-changing option, by name)."""
    return {
        **source.identity(),
        **scoring.values,
        "input_format": source.format,
        "output_format": output_format,
        "errors": str(errors.resolve()),
        "part_rows": part_rows,
        "crossrank": __version__,
    }


def _local_parts(source: Source, pending: Sequence[int], reranker: Reranker) -> Iterator[PartResult]:
    from crossrank.batch.files import RowReader

    reader = RowReader(source)
    for part in pending:
        rows, errors = process(reranker, reader.part(part))
        yield part, rows, errors, None


def run(
    input: str | Path,
    output: str | Path,
    *,
    model: str | RerankerOptions | Reranker = DEFAULT_MODEL,
    reranker_options: Mapping[str, Any] | None = None,
    engine: Engine = "local",
    ray: RayOptions | None = None,
    input_format: str | None = None,
    output_format: str | None = None,
    errors: str | Path | None = None,
    part_rows: int = 1000,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> BatchReport:
    """Rerank every row of ``input`` into ``output``; an interrupted run, started again the same way, resumes.

    Example:
        >>> from crossrank.batch import run
        >>> run("candidates.jsonl", "scores.parquet", model="BAAI/bge-reranker-v2-m3").rows_per_second

    Args:
        input: JSONL or Parquet rows ``{"id", "query", "documents": [...]}`` or ``{"id", "query", "document"}``.
        output: JSONL or Parquet file of ``{"id", "results": [{"index", "score", "relevance_score", "rank"}]}``;
            it appears only when the run is complete (the work in progress is in ``OUTPUT.parts/``).
        model: hub id or local folder, the typed ``RerankerOptions``, or (local engine only) a loaded ``Reranker``.
        reranker_options: with a hub id or folder, ``Reranker``'s keyword arguments (``device``, ``max_length``,
            ``aggregate``, ...).
        engine: ``local`` (this process) or ``ray`` (Ray Data, an actor pool with one model per actor).
        ray: the Ray engine's options.
        input_format, output_format: ``jsonl`` or ``parquet`` when the extension does not say.
        errors: the errors file (default ``OUTPUT-stem.errors.jsonl`` beside the output).
        part_rows: input rows per part, the unit of checkpointing (and of scoring: a part's pairs share batches).
        overwrite: replace an existing output, and discard an unfinished run started with other arguments (never
            the input: an output or errors file that is the input, through a link or not, is refused).
        progress: called with (rows done, rows in all) as parts complete.
    """
    started = time.perf_counter()
    in_path, out_path = Path(input), Path(output)
    errors_path = default_errors_path(out_path) if errors is None else Path(errors)
    if engine not in ("local", "ray"):
        raise ConfigError(f"engine must be local or ray, got {engine!r}")
    if engine == "ray" and isinstance(model, Reranker):
        raise ConfigError(
            "the Ray engine loads the model in each actor: pass the model's name or folder, not a Reranker"
        )
    if reranker_options and not isinstance(model, str):
        raise ConfigError("reranker_options go with a model name or folder; a Reranker or RerankerOptions has its own")
    options = (
        model if not isinstance(model, str) else RerankerOptions.from_flat(model=model, **(reranker_options or {}))
    )
    _refuse_same_files(in_path, out_path, errors_path)
    out_format = detect_format(out_path, output_format, "output")
    source = scan(in_path, detect_format(in_path, input_format, "input"), part_rows)
    if out_path.exists() and not overwrite:
        raise ConfigError(f"{out_path} already exists", fix="choose another output, or pass --overwrite")

    # The lock on OUT.parts/ first, so a second run on this output is refused before it loads a model.
    with WorkDir(out_path) as workdir:
        reranker: Reranker | None = None
        if isinstance(options, Reranker):
            reranker = options
            scoring = reranker.fingerprint()
        elif engine == "local":
            reranker = Reranker.from_options(options)
            scoring = reranker.fingerprint()
        else:
            # Ray's actors load the model: the fingerprint is made here from its files and the options asked for.
            scoring = describe(options)
        pairs = 0
        try:
            done = workdir.open(_fingerprint(source, out_format, errors_path, scoring, part_rows), overwrite=overwrite)
            pending = [k for k in range(source.parts) if k not in done]
            finished = sum(source.rows_in(k) for k in done)
            if progress is not None:
                progress(finished, source.total_rows)
            if reranker is None:
                try:
                    from crossrank.batch.ray_engine import ray_parts
                except ImportError as exc:
                    raise ConfigError(
                        f"the Ray engine needs ray[data], which is not installed ({exc})",
                        fix="pip install 'crossrank[ray]'",
                    ) from None
                assert isinstance(options, RerankerOptions)  # a Reranker was refused above
                results = ray_parts(source, pending, options, ray or RayOptions())
            else:
                results = _local_parts(source, pending, reranker)
            for part, rows, bad, scored in results:
                workdir.commit(part, rows, bad, scored)
                pairs += sum(len(row["results"]) for row in rows)
                finished += source.rows_in(part)
                if progress is not None:
                    progress(finished, source.total_rows)
        finally:
            if reranker is not None and reranker is not model:
                reranker.close()

        total_rows, bad_rows = workdir.counts(source.parts)
        # The errors file first: once the output exists, the run is complete.
        write_output([workdir.errors_path(k) for k in range(source.parts)], errors_path, "jsonl", None)
        write_output([workdir.part_path(k) for k in range(source.parts)], out_path, out_format, _schema(out_format))
        workdir.remove()
        return BatchReport(
            output=out_path,
            errors=errors_path,
            engine=engine,
            rows=total_rows,
            bad_rows=bad_rows,
            parts=source.parts,
            resumed_parts=len(done),
            pairs=pairs,
            seconds=time.perf_counter() - started,
            input_rows=sum(source.rows_in(k) for k in pending),
        )


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file: the same path once links are resolved, or the same inode."""
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and a.samefile(b)
    except OSError:
        return False


def _refuse_same_files(input: Path, output: Path, errors: Path) -> None:
    """Refuse, before anything is written, an output or errors file that is the input (or each other)."""
    if _same_file(output, input):
        raise ConfigError(
            f"the output {output} is the input file {input}: writing it would replace the input with the results",
            fix="choose another output file (--overwrite only replaces an earlier output, never the input)",
        )
    if _same_file(errors, input) or _same_file(errors, output):
        raise ConfigError(
            f"the errors file {errors} must differ from the input and the output",
            fix="choose another errors file (--errors), or leave it out for OUTPUT-stem.errors.jsonl",
        )


def _schema(fmt: str) -> Any:
    return output_schema() if fmt == "parquet" else None
