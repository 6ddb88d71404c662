"""`crossrank eval`: ranking quality before and after reranking, on BEIR / C-MTEB data; compare saved runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from crossrank.cli._common import (
    MODEL_FLAGS,
    SCORING_FLAGS,
    Flags,
    JsonOption,
    open_reranker,
    reporting_errors,
    with_flags,
)
from crossrank.cli._render import print_compare, print_eval, task_progress
from crossrank.errors import ConfigError
from crossrank.evaluate import FirstStage, compare, evaluate, find_datasets, write_trec_run
from crossrank.evaluate.compare import read_saved
from crossrank.evaluate.report import check_destinations, draw, write_plots, write_report
from crossrank.evaluate.runner import check_evaluable

__all__ = ["eval_command"]


def _run_paths(run_out: Path, names: list[str]) -> list[Path]:
    """One TREC run file per data set: the given name for one, ``<stem>.<data set><suffix>`` for several."""
    if len(names) == 1:
        return [run_out]
    return [run_out.with_name(f"{run_out.stem}.{name}{run_out.suffix}") for name in names]


def _save(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def _write_views(
    report: Path | None,
    plot_dir: Path | None,
    payload: dict[str, Any],
    baseline: Path | None = None,
    diff: dict[str, Any] | None = None,
) -> None:
    """The HTML report and the PNG plots, drawn once for both."""
    if report is None and plot_dir is None:
        return
    saved = read_saved(baseline) if baseline is not None else None
    figures = draw(payload, saved)
    if report is not None:
        write_report(report, payload, figures=figures, baseline=saved, diff=diff)
    if plot_dir is not None:
        write_plots(plot_dir, figures)


@with_flags(MODEL_FLAGS, SCORING_FLAGS)
def eval_command(
    data: Annotated[
        list[Path] | None,
        typer.Option(
            "--data",
            "-d",
            help="BEIR folder, C-MTEB reranking .jsonl, or a folder of them (repeatable).",
            show_default=False,
        ),
    ] = None,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="First-stage candidates reranked per query.")] = 100,
    first_stage: Annotated[
        FirstStage, typer.Option(help="auto (given candidates, else BM25), candidates, or bm25 (ignore given ones).")
    ] = "auto",
    candidates: Annotated[
        Path | None, typer.Option(help="Candidates file (.jsonl or TREC run) for a single BEIR folder.")
    ] = None,
    split: Annotated[str, typer.Option(help="qrels/<split>.tsv to use when there is no qrels.tsv.")] = "test",
    max_queries: Annotated[
        int | None, typer.Option("--max-queries", min=1, help="Only the first N judged queries of each set.")
    ] = None,
    run_out: Annotated[
        Path | None, typer.Option("--run-out", help="Write the reranked lists as a TREC run file.")
    ] = None,
    save: Annotated[Path | None, typer.Option("--save", help="Also write the JSON results to this file.")] = None,
    html_report: Annotated[
        Path | None,
        typer.Option("--report", help="Write a self-contained HTML report (tables and plots) to this file."),
    ] = None,
    plot_dir: Annotated[
        Path | None, typer.Option("--plot-dir", help="Write the report's plots as PNG files into this folder.")
    ] = None,
    compare_with: Annotated[
        list[Path] | None,
        typer.Option(
            "--compare",
            help="A saved JSON result: diff this run against it; or give two (and no --data) to diff them.",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOption = False,
    *,
    flags: Flags,
) -> None:
    """Measure NDCG@10, MRR@10, MAP and Recall@10/100 of the first stage and after reranking.

    The first stage is the data set's candidate lists, else BM25 over the corpus (words and Chinese bigrams).

    --report and --plot-dir need matplotlib (pip install 'crossrank[eval]').

    Exit codes: 0 ok, 2 bad option, data file or unwritable --report/--plot-dir, 3 model unusable,
    4 runtime failure.
    """
    baselines = list(compare_with or [])
    with reporting_errors():
        if not data:
            if len(baselines) != 2:
                raise ConfigError(
                    "nothing to do: give --data to evaluate, or two --compare files to diff",
                    fix="crossrank eval --data DIR --model M   |   crossrank eval --compare A.json --compare B.json",
                )
            check_destinations(html_report, plot_dir)
            saved = compare(baselines[0], baselines[1])
            if html_report is not None or plot_dir is not None:
                _write_views(html_report, plot_dir, read_saved(baselines[1]), baselines[0], saved.to_dict())
            if as_json:
                typer.echo(json.dumps(saved.to_dict(), ensure_ascii=False))
            else:
                print_compare(saved)
            return
        if len(baselines) > 1:
            raise ConfigError("with --data, give at most one --compare file (the run to compare against)")
        if candidates is not None and len(data) != 1:
            raise ConfigError("--candidates needs exactly one --data folder")
        check_destinations(html_report, plot_dir)  # before the (long) evaluation
        datasets = [d for path in data for d in find_datasets(path, split=split, candidates=candidates)]
        for found in datasets:
            check_evaluable(found)  # before the model loads
        reranker = open_reranker(flags)
        with task_progress("pairs") as progress:
            report = evaluate(
                datasets,
                reranker,
                top_k=top_k,
                first_stage=first_stage,
                max_queries=max_queries,
                progress=progress,
            )
        payload = report.to_dict()
        if save is not None:
            _save(save, payload)
        if run_out is not None:
            for dataset, path in zip(
                report.datasets, _run_paths(run_out, [d.name for d in report.datasets]), strict=True
            ):
                write_trec_run(dataset, path)
        diff = compare(baselines[0], payload) if baselines else None
        _write_views(
            html_report,
            plot_dir,
            payload,
            baselines[0] if baselines else None,
            None if diff is None else diff.to_dict(),
        )
        if as_json:
            typer.echo(
                json.dumps(payload if diff is None else {**payload, "compare": diff.to_dict()}, ensure_ascii=False)
            )
        else:
            print_eval(report)
            if diff is not None:
                print_compare(diff)
