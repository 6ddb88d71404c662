"""The only rich importer: reports and results to tables, errors to one red line and a fix."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text
from tqdm import TqdmExperimentalWarning
from tqdm.rich import tqdm_rich

from crossrank.batch import BatchReport
from crossrank.cli._help import cli_text
from crossrank.errors import CrossrankError
from crossrank.evaluate import CompareReport, EvalReport
from crossrank.models.download import DownloadResult
from crossrank.models.verify import Check, VerifyReport
from crossrank.settings import Settings
from crossrank.tools.bench import BenchReport
from crossrank.tools.check import CheckReport
from crossrank.tools.demo import DemoReport
from crossrank.tools.doctor import DoctorReport
from crossrank.types import RerankResult

__all__ = [
    "RichDownloadBar",
    "batch_progress",
    "print_batch",
    "print_bench",
    "print_check",
    "print_compare",
    "print_demo",
    "print_doctor",
    "print_download",
    "print_error",
    "print_eval",
    "print_note",
    "print_rerank",
    "print_verify",
    "task_progress",
]

_out = Console(highlight=False, soft_wrap=True)
_err = Console(stderr=True, highlight=False, soft_wrap=True)


def _clip(text: str, width: int = 80) -> str:
    flat = " ".join(text.split())
    return escape(flat if len(flat) <= width else flat[: width - 1] + "…")


# Reranker keyword arguments, which are also the CLI's flags: a fix's Python words are shown as flags (the message
# says what happened in the library's words; the fix says what to type).
_FLAG_NAMES = frozenset(Settings.model_fields)


def print_error(error: CrossrankError) -> None:
    _err.print(f"[bold red]error:[/] {escape(error.message)}")
    if error.fix:
        _err.print(f"[bold]fix:[/] {escape(cli_text(error.fix, _FLAG_NAMES))}")


def print_note(text: str) -> None:
    _err.print(f"[yellow]note:[/] {escape(text)}")


def print_rerank(result: RerankResult, query: str, latency_ms: float) -> None:
    table = Table(title=f"query: {_clip(query, 60)}", title_justify="left")
    for column in ("rank", "index", "score", "relevance", "document"):
        table.add_column(column, justify="left" if column == "document" else "right")
    for rank, item in enumerate(result.results, start=1):
        table.add_row(
            str(rank), str(item.index), f"{item.score:.4f}", f"{item.relevance_score:.4f}", _clip(item.document or "")
        )
    _out.print(table)
    _out.print(f"{len(result.results)} results, {result.usage.total_tokens} tokens, {latency_ms:.1f} ms")


def print_check(report: CheckReport) -> None:
    _out.print(
        f"model {escape(report.model)}\ndevice {report.device}, dtype {report.dtype}, max_length {report.max_length}\n"
        f"loaded in {report.load_seconds:.2f} s, {report.ms_per_pair:.1f} ms per pair"
    )
    table = Table(show_header=True)
    for column in ("lang", "query", "relevant", "irrelevant", "result"):
        table.add_column(column)
    for check in report.checks:
        verdict = "[green]ok[/]" if check.passed else "[red]FAIL[/]"
        table.add_row(
            check.language,
            _clip(check.query, 30),
            f"{check.relevant_score:.3f}",
            f"{check.irrelevant_score:.3f}",
            verdict,
        )
    _out.print(table)
    for language, reason in report.skipped.items():
        _out.print(f"skipped {language}: {escape(reason)}")
    _out.print("[bold green]check passed[/]" if report.passed else "[bold red]check failed[/]")


def print_demo(report: DemoReport) -> None:
    table = Table(title=escape(f"query: {report.query}   model: {report.model}"), title_justify="left")
    for column in ("rank", "keyword rank", "keyword overlap", "relevance", "document"):
        table.add_column(column, justify="left" if column == "document" else "right")
    for row in report.rows:
        moved = "" if row.rank == row.keyword_rank else f" (was {row.keyword_rank})"
        table.add_row(
            f"{row.rank}{moved}",
            str(row.keyword_rank),
            f"{row.keyword_score:.2f}",
            f"{row.relevance_score:.4f}",
            _clip(row.document, 60),
        )
    _out.print(table)
    _out.print(
        f"reranked {len(report.rows)} documents in {report.latency_ms:.1f} ms. Keyword overlap rewards shared "
        "words; the reranker reads the meaning."
    )


class RichDownloadBar(tqdm_rich):  # type: ignore[misc]  # tqdm ships no types
    """huggingface_hub's progress bars drawn by rich (it takes any tqdm-compatible class)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.pop("name", None)  # huggingface_hub's own tqdm takes a name; tqdm's does not
        kwargs.setdefault("options", {"console": _err})  # progress on stderr, results on stdout
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TqdmExperimentalWarning)
            super().__init__(*args, **kwargs)

    def display(self, *args: Any, **kwargs: Any) -> None:
        # huggingface_hub grows `total` as files are discovered; pass it on, tqdm.rich only sets it once.
        if hasattr(self, "_prog"):
            self._prog.update(self._task_id, completed=self.n, total=self.total or None, description=self.desc)


_MARK = {"ok": "[green]ok[/]", "warn": "[yellow]warn[/]", "fail": "[bold red]FAIL[/]"}


def _print_checks(title: str, checks: list[Check], status: str) -> None:
    table = Table(title=escape(title), title_justify="left", show_lines=False)
    for column in ("check", "", "finding"):
        table.add_column(column)
    for check in checks:
        fix = cli_text(check.fix, _FLAG_NAMES) if check.fix else None
        finding = escape(check.detail) + (f"\n[bold]fix:[/] {escape(fix)}" if fix else "")
        table.add_row(escape(check.name), _MARK[check.status], finding)
    _out.print(table)
    _out.print(f"result: {_MARK[status]}")


def print_verify(report: VerifyReport) -> None:
    _print_checks(f"verify {report.path}", report.checks, report.status)


def print_doctor(report: DoctorReport) -> None:
    """The findings as a table (long words folded onto the next line, never cut), then every fix in full on a line
    of its own, never wrapped or cut by rich, so a command or path can be copied as printed."""
    table = Table(title="crossrank doctor", title_justify="left", show_lines=False)
    table.add_column("check", no_wrap=True)
    table.add_column("")
    table.add_column("finding", overflow="fold")
    for check in report.checks:
        table.add_row(escape(check.name), _MARK[check.status], escape(check.detail))
    _out.print(table)
    fixes = [check for check in report.checks if check.fix]
    if fixes:
        _out.print("fixes:")
    for check in fixes:
        _out.print(f"  {escape(check.name)}: [bold]fix:[/] {escape(check.fix or '')}", soft_wrap=True, crop=False)
    _out.print(f"result: {_MARK[report.status]}")


def print_download(result: DownloadResult) -> None:
    total = sum(size for size, _ in result.manifest.files.values())
    _out.print(
        f"[green]downloaded[/] {escape(result.manifest.repo_id)} at {result.commit[:12]}: "
        f"{len(result.manifest.files)} files, {total / 2**20:.1f} MiB, sha256 recorded\n{escape(str(result.folder))}"
    )


@contextmanager
def task_progress(unit: str) -> Iterator[Callable[[str, int, int], None]]:
    """A progress bar on stderr, one line per task (data set, system), and the callback that advances it."""
    tasks: dict[str, TaskID] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit))
    with Progress(*columns, TimeRemainingColumn(), console=_err, transient=True) as progress:

        def update(dataset: str, done: int, total: int) -> None:
            if dataset not in tasks:
                tasks[dataset] = progress.add_task(escape(dataset), total=total)
            progress.update(tasks[dataset], completed=done)

        yield update


class _RateColumn(ProgressColumn):
    """Rows per second, over rich's recent window (rows resumed from an earlier run do not count)."""

    def render(self, task: Task) -> Text:
        speed = task.speed
        return Text("-- rows/s" if speed is None else f"{speed:,.1f} rows/s")


@contextmanager
def batch_progress() -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr for `crossrank batch` (rows, rows/s, elapsed, ETA) and its callback."""
    columns = (
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rows"),
        _RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    task: list[TaskID] = []
    with Progress(*columns, console=_err, transient=True) as progress:

        def update(done: int, total: int) -> None:
            if not task:
                # Start at the resumed count, so the rate and the ETA are this run's.
                task.append(progress.add_task("batch", total=total, completed=done))
            progress.update(task[0], completed=done)

        yield update


def print_batch(report: BatchReport) -> None:
    resumed = (
        f", {report.resumed_parts} of {report.parts} parts resumed from an earlier run" if report.resumed_parts else ""
    )
    _out.print(
        f"{report.rows} rows -> {escape(str(report.output))}, "
        f"{report.bad_rows} bad rows -> {escape(str(report.errors))}\n"
        f"{report.engine} engine: {report.input_rows} input rows, {report.pairs} pairs in {report.seconds:.1f} s "
        f"({report.rows_per_second:,.1f} rows/s){resumed}"
    )


def _p(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _delta(value: float) -> str:
    colour = "green" if value > 0 else "red" if value < 0 else "default"
    return f"[{colour}]{value:+.4f}[/]"


def print_eval(report: EvalReport) -> None:
    _out.print(
        f"model {escape(report.model)}  device {report.device}, dtype {report.dtype}, "
        f"max_length {report.max_length}, top_k {report.top_k}"
    )
    for dataset in report.datasets:
        table = Table(
            title=escape(
                f"{dataset.name}: {dataset.queries} queries, {dataset.pairs} pairs, first stage {dataset.first_stage}"
            ),
            title_justify="left",
        )
        for column in ("metric", "first stage", "reranked", "delta", "p (paired t)"):
            table.add_column(column, justify="left" if column == "metric" else "right")
        for name, before in dataset.metrics.items():
            table.add_row(
                name,
                f"{before:.4f}",
                f"{dataset.reranked[name]:.4f}",
                _delta(dataset.delta[name]),
                _p(dataset.p_values[name]),
            )
        _out.print(table)
        skipped = f", {dataset.skipped_queries} queries without qrels skipped" if dataset.skipped_queries else ""
        _out.print(f"scored in {dataset.seconds:.1f} s ({dataset.pairs_per_second:.0f} pairs/s){skipped}")


def print_compare(report: CompareReport) -> None:
    _out.print(f"base: {escape(report.base)}\nnew:  {escape(report.new)}")
    for dataset in dict.fromkeys(row.dataset for row in report.rows):
        table = Table(title=escape(dataset), title_justify="left")
        for column in ("metric", "base", "new", "delta", "queries", "p (paired t)"):
            table.add_column(column, justify="left" if column == "metric" else "right")
        for row in (r for r in report.rows if r.dataset == dataset):
            table.add_row(
                row.metric, f"{row.base:.4f}", f"{row.new:.4f}", _delta(row.delta), str(row.queries), _p(row.p_value)
            )
        _out.print(table)
    for name in report.only_in_base:
        _out.print(f"only in base: {escape(name)}")
    for name in report.only_in_new:
        _out.print(f"only in new: {escape(name)}")


def _mib(value: int | None) -> str:
    return "-" if not value else f"{value / 2**20:,.0f}"


def print_bench(report: BenchReport) -> None:
    machine, workload = report.machine, report.workload
    _out.print(
        f"{escape(machine['cpu'])}, {machine['cores']} cores, flags: {', '.join(machine['flags']) or 'none'}\n"
        f"{workload['kind']} workload: {workload['queries']} queries x {workload['docs']} documents of "
        f"{workload['document_tokens_min']}-{workload['document_tokens_max']} tokens "
        f"(mean {workload['document_tokens_mean']:.0f}), seed {workload['seed']}"
    )
    # Two tables of at most eight columns, so each fits 100 columns (a pipe or an 80-column terminal would
    # squeeze one table of fourteen figures to "1,2…"); a system that failed gets a line of its own below.
    speed = Table("system", "precision", "pairs/s", "tokens/s", "p50 ms", "p95 ms", "p99 ms", title="speed")
    cost = Table(
        "system", "padding eff.", "peak RSS MiB", "TFLOP/s", "MFU", "peak GPU MiB", "load s", "first s", title="cost"
    )
    for table in (speed, cost):
        table.title_justify = "left"
        for column in table.columns:
            if column.header not in ("system", "precision"):
                column.justify = "right"
                column.no_wrap = True
    failures = []
    for r in report.results:
        if r.error is not None:
            failures.append(f"[red]{escape(r.system)} failed:[/] {escape(r.error)}")
            speed.add_row(escape(r.system), "[red]failed[/]")
            continue
        padding = "-" if r.padding_efficiency is None else f"{r.padding_efficiency:.0%}"
        speed.add_row(
            escape(r.system),
            escape(r.precision),
            f"{r.pairs_per_second:,.2f}",
            "-" if r.tokens_per_second is None else f"{r.tokens_per_second:,.0f}",
            f"{r.p50_ms:,.0f}",
            f"{r.p95_ms:,.0f}",
            f"{r.p99_ms:,.0f}",
        )
        cost.add_row(
            escape(r.system),
            padding,
            _mib(r.peak_rss_bytes),
            "-" if r.model_tflops is None else f"{r.model_tflops:,.2f}",
            "-" if r.mfu is None else f"{r.mfu:.1%}",
            _mib(r.peak_gpu_bytes),
            f"{r.load_seconds:.1f}",
            f"{r.first_score_seconds:.1f}",
        )
    console = Console(highlight=False, width=100)
    console.print(speed)
    if cost.row_count:
        console.print(cost)
    for line in failures:
        _out.print(line)
    for peer, ratio in report.ratios.items():
        _out.print(f"crossrank / {escape(peer)}: [bold]{ratio:.2f}x[/] pairs/s")
    if report.capacity is not None:
        c = report.capacity
        _out.print(
            f"capacity: {c.target_rps:g} requests/s need [bold]{c.replicas}[/] replica(s) of this machine "
            f"({c.rps_per_replica:.2f} requests/s each, {c.utilisation:.0%} busy); expect p95 ~{c.p95_ms:,.0f} ms"
        )
