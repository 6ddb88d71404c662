"""What the parity tests share: the inputs, crossrank's scores of them in pair order, and the ids it builds."""

from __future__ import annotations

from collections.abc import Sequence

from crossrank import Reranker
from crossrank.config import TruncationOptions
from crossrank.types import ScoredDocument

# English, Chinese, an empty document and a long one (cut: the tests pick max_length so that it is).
LONG_DOCUMENT = " ".join(["the giant panda eats bamboo in the mountain forest of china and the bear is a panda"] * 60)
PAIRS: list[tuple[str, str]] = [
    ("what is a panda?", "The giant panda is a bear native to south central China. Pandas eat bamboo."),
    ("熊猫吃什么？", "大熊猫是中国特有的熊，主要以竹子为食。"),
    ("what is a panda?", ""),
    ("what is the capital of france?", LONG_DOCUMENT),
]
INSTRUCTION = "Given a question about animals, find the passage that answers it"


def rerank_pairs(
    reranker: Reranker, pairs: Sequence[tuple[str, str]], *, instruction: str | None, max_length: int
) -> list[ScoredDocument]:
    """crossrank's result for each pair, in the pairs' order (one ``rerank`` call per query, long documents cut
    to their first window, as upstream reads them)."""
    by_query: dict[str, list[int]] = {}
    for i, (query, _) in enumerate(pairs):
        by_query.setdefault(query, []).append(i)
    results: dict[int, ScoredDocument] = {}
    for query, rows in by_query.items():
        answer = reranker.rerank(
            query, [pairs[i][1] for i in rows], instruction=instruction, max_length=max_length, aggregate="first"
        )
        for result in answer.results:
            results[rows[result.index]] = result
    return [results[i] for i in range(len(pairs))]


def prompt_ids(reranker: Reranker, query: str, document: str, *, instruction: str | None, max_length: int) -> list[int]:
    """The ids crossrank gives the model for one pair (the first window of a long document)."""
    tokenizer = reranker.scorer.tokenizer
    truncation = TruncationOptions(max_length=max_length)
    encoded = tokenizer.encode_query(query, truncation, instruction)
    return tokenizer.build_pair(encoded, tokenizer.encode_documents([document])[0].ids, truncation).ids
