"""What the LangChain, LlamaIndex and Haystack tests share: the query and texts, and the ranking they must match."""

from __future__ import annotations

import pytest

from crossrank import Reranker
from crossrank.config import RerankOptions

QUERY = "what is a panda?"
TEXTS = [
    "hi",
    "The giant panda is a bear native to China.",
    "Paris is the capital of France.",
    "A panda eats bamboo; the giant panda is a bear.",
]
# Long enough to be read in several windows at max_length 32.
LONG = " ".join(["Paris is the capital of France."] * 12 + ["The giant panda is a bear native to China."])
# (text, relevance score) of each returned document, best first.
Ranked = list[tuple[str, float]]


def expected(reranker: Reranker, texts: list[str], top_n: int | None, **options: object) -> Ranked:
    """What ``Reranker.rerank`` returns for ``QUERY`` and ``texts``, as (text, relevance score) pairs."""
    result = reranker.rerank(QUERY, texts, top_n=top_n, options=RerankOptions(**options))  # type: ignore[arg-type]
    return [(texts[r.index], r.relevance_score) for r in result.results]


def assert_ranked_like(got: Ranked, want: Ranked, *, abs: float) -> None:
    """The same texts in the same order, each score within ``abs`` of the reference's."""
    assert [text for text, _ in got] == [text for text, _ in want]
    assert [score for _, score in got] == pytest.approx([score for _, score in want], abs=abs)
