"""Why a reranker beats keyword matching, shown on keyword-trap examples."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Literal

from crossrank.engine.tokenizer import UNREADABLE_SHARE
from crossrank.errors import InputError
from crossrank.reranker import Reranker

__all__ = ["DEMO_CASES", "DemoReport", "DemoRow", "keyword_overlap", "pick_language", "run_demo"]

Language = Literal["zh", "en"]

# Keyword traps: candidates that share the query's words but are about something else.
DEMO_CASES: dict[Language, tuple[str, tuple[str, ...]]] = {
    "zh": (
        "苹果手机",
        (
            "苹果是一种水果，富含维生素",
            "iPhone 15 Pro 搭载 A17 芯片",
            "华为发布新款智能手机",
            "苹果树的种植方法",
        ),
    ),
    "en": (
        "apple iphone price",
        (
            "The price of apples at the farmers market",
            "Apple pie price per slice",
            "Apples are a healthy fruit",
            "The new iPhone costs 999 dollars",
        ),
    ),
}

_WORD = re.compile(r"[a-z0-9]+")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]+")


def _terms(text: str) -> set[str]:
    lowered = text.lower()
    # Plural "s" stripped so "apples" matches "apple", as a keyword search with stemming would.
    terms = {w[:-1] if len(w) > 3 and w.endswith("s") else w for w in _WORD.findall(lowered)}
    for run in _CJK.findall(lowered):
        terms.update(run[i : i + 2] for i in range(max(len(run) - 1, 1)))
    return terms


def keyword_overlap(query: str, document: str) -> float:
    """Share of the query's terms (lower-cased words, Chinese character bigrams) found in the document."""
    wanted = _terms(query)
    return len(wanted & _terms(document)) / len(wanted) if wanted else 0.0


@dataclass(frozen=True, slots=True)
class DemoRow:
    """One candidate under both rankings (ranks start at 1)."""

    document: str
    keyword_score: float
    keyword_rank: int
    relevance_score: float
    rank: int


@dataclass(frozen=True, slots=True)
class DemoReport:
    """The candidates of one language, in reranked order."""

    model: str
    language: Language
    query: str
    rows: list[DemoRow]
    latency_ms: float


def pick_language(reranker: Reranker) -> Language:
    """Chinese when the model's vocabulary reads Chinese, else English."""
    query, documents = DEMO_CASES["zh"]
    return "zh" if reranker.unknown_fraction(query + "".join(documents)) < UNREADABLE_SHARE else "en"


def run_demo(reranker: Reranker, language: Language) -> DemoReport:
    """Rank the language's candidates by keyword overlap and by the reranker.

    Raises:
        InputError: the model cannot read the language (its ranking would be noise, shown as if it meant something).
    """
    query, documents = DEMO_CASES[language]
    unknown = reranker.unknown_fraction(query + "".join(documents))
    if unknown >= UNREADABLE_SHARE:
        raise InputError(
            f"{reranker.info.path.name} cannot read the {language!r} examples: {unknown:.0%} of their tokens are "
            "unknown to its vocabulary",
            fix="use --lang auto (or another language), or a multilingual model such as BAAI/bge-reranker-v2-m3",
        )
    keyword = [keyword_overlap(query, d) for d in documents]
    keyword_order = sorted(range(len(documents)), key=lambda i: -keyword[i])
    started = time.perf_counter()
    result = reranker.rerank(query, list(documents))
    latency_ms = 1000 * (time.perf_counter() - started)
    rows = [
        DemoRow(
            document=documents[r.index],
            keyword_score=keyword[r.index],
            keyword_rank=keyword_order.index(r.index) + 1,
            relevance_score=r.relevance_score,
            rank=rank,
        )
        for rank, r in enumerate(result.results, start=1)
    ]
    return DemoReport(model=reranker.model, language=language, query=query, rows=rows, latency_ms=latency_ms)
