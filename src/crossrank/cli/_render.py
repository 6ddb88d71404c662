"""The only rich importer: reports and results to tables, errors to one red line and a fix."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from crossrank.errors import CrossrankError
from crossrank.tools.check import CheckReport
from crossrank.tools.demo import DemoReport
from crossrank.types import RerankResult

__all__ = ["print_check", "print_demo", "print_error", "print_note", "print_rerank"]

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
