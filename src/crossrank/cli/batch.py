"""`crossrank batch`: rerank a JSONL/Parquet file of rows into a file of scores, locally or on Ray; resumable."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from crossrank.batch import Engine, RayOptions, run
from crossrank.cli._common import (
    BATCH_FLAGS,
    MODEL_FLAGS,
    SCORING_FLAGS,
    Flags,
    reporting_errors,
    settings,
    with_flags,
)
from crossrank.cli._render import batch_progress, print_batch, print_note

__all__ = ["batch"]


@contextmanager
def _interrupted(output: Path) -> Iterator[None]:
    """Ctrl-C: say where the work done so far is kept and how to go on, instead of a traceback."""
    try:
        yield
    except KeyboardInterrupt:
        print_note(f"interrupted; finished parts are kept in {output}.parts/: run the same command again to resume")
        raise typer.Exit(130) from None


@with_flags(MODEL_FLAGS, SCORING_FLAGS, BATCH_FLAGS)
def batch(
    input: Annotated[
        Path, typer.Argument(help="JSONL or Parquet rows: {id, query, documents} or {id, query, document}.")
    ],
    output: Annotated[
        Path, typer.Argument(help="JSONL or Parquet file of {id, results: [{index, score, relevance_score, rank}]}.")
    ],
    engine: Annotated[
        Engine, typer.Option(help="local (this process) or ray (Ray Data, one model per actor).")
    ] = "local",
    output_format: Annotated[
        str | None, typer.Option("--format", help="Output format, jsonl or parquet (default: from the extension).")
    ] = None,
    input_format: Annotated[
        str | None, typer.Option("--input-format", help="Input format, jsonl or parquet (default: from the extension).")
    ] = None,
    errors: Annotated[
        Path | None, typer.Option(help="Where bad rows go, with the reason (default: OUTPUT-stem.errors.jsonl).")
    ] = None,
    part_rows: Annotated[
        int, typer.Option("--part-rows", min=1, help="Input rows per part: the unit of checkpointing and resume.")
    ] = 1000,
    overwrite: Annotated[
        bool, typer.Option(help="Replace an existing output; discard an unfinished run started with other arguments.")
    ] = False,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address", help="Ray cluster: auto, HOST:6379 or ray://HOST:10001 (default: start a local one)."
        ),
    ] = None,
    actors: Annotated[int, typer.Option(min=1, help="Ray engine: actors (models) in the pool.")] = 1,
    num_cpus: Annotated[float, typer.Option("--num-cpus", min=0, help="Ray engine: CPUs per actor.")] = 1.0,
    num_gpus: Annotated[
        float, typer.Option("--num-gpus", min=0, help="Ray engine: GPUs per actor (fractions share one).")
    ] = 0.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run's report as JSON.")] = False,
    *,
    flags: Flags,
) -> None:
    """Score every row of INPUT into OUTPUT, with a progress bar; bad rows go to the errors file, the run goes on.

    OUTPUT appears only once the run is complete; the work in progress is kept in OUTPUT.parts/.
    Run the same command again after an interruption and it resumes where it stopped (no row lost
    or written twice); with other arguments, or any option that changes a score, it refuses and names
    them, unless --overwrite.

    Exit codes: 0 ok, 2 bad option or input file, 3 model unusable, 4 runtime failure.
    """
    with reporting_errors():
        with batch_progress() as progress, _interrupted(output):
            report = run(
                input,
                output,
                model=settings(flags).reranker_options(),
                engine=engine,
                ray=RayOptions(address=ray_address, actors=actors, num_cpus=num_cpus, num_gpus=num_gpus),
                input_format=input_format,
                output_format=output_format,
                errors=errors,
                part_rows=part_rows,
                overwrite=overwrite,
                progress=progress,
            )
        if as_json:
            typer.echo(json.dumps(report.to_dict(), ensure_ascii=False))
        else:
            print_batch(report)
