"""The only rich importer: reports and results to tables, errors to one red line and a fix."""

from __future__ import annotations

import warnings
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from tqdm import TqdmExperimentalWarning
from tqdm.rich import tqdm_rich

from crossrank.errors import CrossrankError
from crossrank.models.download import DownloadResult
from crossrank.models.verify import Check, VerifyReport
from crossrank.tools.check import CheckReport
from crossrank.tools.demo import DemoReport
from crossrank.tools.doctor import DoctorReport
from crossrank.types import RerankResult

__all__ = [
    "RichDownloadBar",
    "print_check",
    "print_demo",
    "print_doctor",
    "print_download",
    "print_error",
    "print_note",
    "print_rerank",
    "print_verify",
]

_out = Console(highlight=False, soft_wrap=True)
_err = Console(stderr=True, highlight=False, soft_wrap=True)


def _clip(text: str, width: int = 80) -> str:
    flat = " ".join(text.split())
    return escape(flat if len(flat) <= width else flat[: width - 1] + "…")


def print_error(error: CrossrankError) -> None:
    _err.print(f"[bold red]error:[/] {escape(error.message)}")
    if error.fix:
        _err.print(f"[bold]fix:[/] {escape(error.fix)}")


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
        finding = escape(check.detail) + (f"\n[bold]fix:[/] {escape(check.fix)}" if check.fix else "")
        table.add_row(escape(check.name), _MARK[check.status], finding)
    _out.print(table)
    _out.print(f"result: {_MARK[status]}")


def print_verify(report: VerifyReport) -> None:
    _print_checks(f"verify {report.path}", report.checks, report.status)


def print_doctor(report: DoctorReport) -> None:
    _print_checks("crossrank doctor", report.checks, report.status)


def print_download(result: DownloadResult) -> None:
    total = sum(size for size, _ in result.manifest.files.values())
    _out.print(
        f"[green]downloaded[/] {escape(result.manifest.repo_id)} at {result.commit[:12]}: "
        f"{len(result.manifest.files)} files, {total / 2**20:.1f} MiB, sha256 recorded\n{escape(str(result.folder))}"
    )
