"""`crossrank rerank`: order documents for a query from arguments, a file or stdin."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Annotated

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
from crossrank.cli._render import print_note, print_rerank
from crossrank.errors import InputError

__all__ = ["rerank"]


def _jsonl_document(line: str, where: str) -> str:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: not valid JSON ({exc.msg})") from None
    if isinstance(value, dict):
        value = value.get("text", value.get("document"))
    if not isinstance(value, str):
        raise InputError(f'{where}: expected a JSON string or an object with a "text" string')
    return value


def read_documents(source: str) -> list[str]:
    """Documents from a .jsonl file (strings or {"text": ...}), else one per non-blank line; '-' is stdin."""
    if source == "-":
        name, text = "<stdin>", sys.stdin.read()
    else:
        path = Path(source)
        if not path.is_file():
            raise InputError(f"no such file: {path}")
        try:
            name, text = str(path), path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"{path} is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    lines = [(number, line) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if name.endswith(".jsonl"):
        return [_jsonl_document(line, f"{name}:{number}") for number, line in lines]
    return [line for _, line in lines]


@with_flags(MODEL_FLAGS, SCORING_FLAGS)
def rerank(
    query: Annotated[str, typer.Argument(help="The search query.")],
    documents: Annotated[list[str] | None, typer.Argument(help="Documents; or use --file, or pipe them in.")] = None,
    file: Annotated[
        str | None, typer.Option("--file", "-f", help=".txt (one per line) or .jsonl file; '-' for stdin.")
    ] = None,
    top_n: Annotated[int | None, typer.Option("--top-n", "-n", min=1, help="Show only the best N.")] = None,
    as_json: JsonOption = False,
    *,
    flags: Flags,
) -> None:
    """Rank documents by relevance to QUERY."""
    with reporting_errors():
        texts = list(documents or [])
        if file is not None:
            texts += read_documents(file)
        elif not texts and not sys.stdin.isatty():
            texts = read_documents("-")
        if not texts:
            raise InputError("no documents given", fix="pass them as arguments, with --file, or on stdin")
        reranker = open_reranker(flags)
        started = time.perf_counter()
        result = reranker.rerank(query, texts, top_n=top_n)
        latency_ms = 1000 * (time.perf_counter() - started)
        if result.usage.chunked_documents:
            how = reranker.chunking.aggregate
            print_note(
                f"{result.usage.chunked_documents} long document(s) were read in windows of "
                f"{reranker.truncation.max_length} tokens ({result.usage.chunks} pairs in all), scored by {how}"
            )
        if result.usage.truncated_documents:
            print_note(
                f"{result.usage.truncated_documents} document(s) were cut to {reranker.truncation.max_length} "
                f"tokens ({result.usage.truncated_tokens} tokens not read); raise --max-length "
                f"(up to {reranker.model_max_length})"
            )
        if as_json:
            payload = {
                "model": reranker.model,
                "query": query,
                "results": [dataclasses.asdict(r) for r in result.results],
                "usage": dataclasses.asdict(result.usage),
                "latency_ms": round(latency_ms, 3),
            }
            typer.echo(json.dumps(payload, ensure_ascii=False))
        else:
            print_rerank(result, query, latency_ms)
