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
from crossrank.reranker import Reranker
from crossrank.types import Usage

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
        if path.is_dir():
            raise InputError(f"{path} is a directory, not a file of documents", fix="pass a .txt or .jsonl file")
        if not path.exists():
            raise InputError(f"no such file: {path}", fix="check the path (or pass '-' to read stdin)")
        try:
            name, text = str(path), path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"{path} is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror}") from None
    lines = [(number, line) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not lines and source != "-":  # empty stdin: "no documents given" says every way to pass them
        raise InputError(
            f"{name} has no documents: it is empty or holds only blank lines",
            fix='put one document per line (.txt), or a JSON string or {"text": ...} per line (.jsonl)',
        )
    if name.endswith(".jsonl"):
        return [_jsonl_document(line, f"{name}:{number}") for number, line in lines]
    return [line for _, line in lines]


def usage_notes(reranker: Reranker, usage: Usage) -> list[str]:
    """What was not read plainly (windows, cuts), and the option that changes it."""
    notes = []
    max_length, chunking = reranker.truncation.max_length, reranker.chunking
    if usage.chunked_documents:
        notes.append(
            f"{usage.chunked_documents} long document(s) were read in windows of up to {max_length} tokens "
            f"({usage.chunks} query-window pairs in all), scored by {chunking.aggregate}"
        )
    if not usage.truncated_documents:
        return notes
    cut = f"{usage.truncated_documents} document(s)"
    if chunking.aggregate == "first":  # one window each: plain truncation
        longer = (
            f"raise --max-length (up to {reranker.model_max_length}), or "
            if max_length < reranker.model_max_length
            else ""
        )
        notes.append(
            f"{cut} were cut to {max_length} tokens ({usage.truncated_tokens} tokens not read); "
            f"{longer}read them whole in windows with --aggregate max"
        )
        return notes
    # The windows stop at --max-chunks-per-doc (or --max-tokens-per-doc): what lies past them is dropped.
    # The widest a window can be (the room beside the query is less): its step gives a lower bound of windows missing.
    size, overlap = chunking.window(max_length)
    missing = -(-usage.truncated_tokens // max(size - overlap, 1))
    cap = reranker.truncation.max_tokens_per_doc
    limit = f"{chunking.max_chunks_per_doc} windows (--max-chunks-per-doc)" + (
        f" or {cap} tokens (--max-tokens-per-doc)" if cap is not None else ""
    )
    notes.append(
        f"{cut} were longer than {limit} cover: {usage.truncated_tokens} tokens past the last window were not "
        f"read (at least {missing} more window(s)); raise --max-chunks-per-doc (now {chunking.max_chunks_per_doc})"
        + (" or --max-tokens-per-doc" if cap is not None else "")
    )
    return notes


@with_flags(MODEL_FLAGS, SCORING_FLAGS)
def rerank(
    query: Annotated[str, typer.Argument(help="The search query.")],
    documents: Annotated[list[str] | None, typer.Argument(help="Documents; or use --file, or pipe them in.")] = None,
    file: Annotated[
        str | None,
        typer.Option("--file", "-f", metavar="FILE", help=".txt (one per line) or .jsonl file; '-' for stdin."),
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
        for note in usage_notes(reranker, result.usage):
            print_note(note)
        if as_json:
            payload = {
                "model": reranker.model,
                # How it was scored: the family, and the instruction a decoder reranker read (null: none).
                "family": reranker.family.name,
                "instruction": reranker.instruction,
                "query": query,
                "results": [dataclasses.asdict(r) for r in result.results],
                "usage": dataclasses.asdict(result.usage),
                "latency_ms": round(latency_ms, 3),
            }
            typer.echo(json.dumps(payload, ensure_ascii=False))
        else:
            print_rerank(result, query, latency_ms)
