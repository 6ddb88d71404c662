"""The shared prefix (system prompt, instruction, query) run once per query gives each full prompt's own score.

DecoderBackend runs the ids every pair of a query shares once and reuses their keys and values for the documents
(attention is causal, so no token reads what follows it). Reference: each pair run alone as one full prompt
(``shared_prefix=None``, no padding). A tiny random Qwen3 reranker (weights of std 0.2, so a wrong position or
cache shows in the scores), float32 on CPU.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from tiny_models import build_small_qwen3_reranker

from crossrank import Reranker
from crossrank.backends.base import EncodedBatch
from crossrank.config import BatchingOptions, PromptOptions, TruncationOptions
from crossrank.engine.scorer import ScoreRequest
from crossrank.engine.tokenizer import EncodedPair

TRUNCATION = TruncationOptions(max_length=256)
DOCUMENTS = [
    "the giant panda is a bear native to south central china.",
    "",  # the shared prefix covers all but the document's label and the prompt's end
    "yes",
    "pandas eat bamboo. " * 6,
    "Paris is the capital of France. Berlin is the capital of Germany.",
    "The quick brown fox jumps over the lazy dog.",
    "where do pandas live?",
    "no",
]
# Two queries, and one query under two instructions: each its own prefix, all rows in one batch.
REQUESTS = [
    ("what is a panda?", None, DOCUMENTS),
    ("what is the capital of france?", "Given a question, find the passage that answers it", DOCUMENTS[:5]),
    ("what is a panda?", "Judge relevance", DOCUMENTS[3:]),
]


@pytest.fixture(scope="module")
def reranker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reranker]:
    folder = build_small_qwen3_reranker(tmp_path_factory.mktemp("prefix") / "Qwen3-Reranker-small")
    with Reranker(str(folder), device="cpu", dtype="float32") as reranker:
        yield reranker


def _pairs(reranker: Reranker) -> list[EncodedPair]:
    tokenizer = reranker.scorer.tokenizer
    pairs = []
    for query, instruction, documents in REQUESTS:
        encoded = tokenizer.encode_query(query, TRUNCATION, instruction)
        for document in tokenizer.encode_documents(documents):
            pairs.append(tokenizer.build_pair(encoded, document.ids, TRUNCATION))
    return pairs


@pytest.fixture(scope="module")
def alone(reranker: Reranker) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Each pair's score run alone, as one whole prompt."""
    tokenizer, backend = reranker.scorer.tokenizer, reranker.scorer.backend
    alone = [dataclasses.replace(tokenizer.pad([pair]), shared_prefix=None) for pair in _pairs(reranker)]
    return np.array([backend.forward(batch)[0] for batch in alone])


def test_a_batch_of_several_queries_reusing_their_prefixes_scores_as_each_prompt_alone(
    reranker: Reranker, alone: np.ndarray[Any, np.dtype[np.float32]]
) -> None:
    pairs = _pairs(reranker)
    batch = reranker.scorer.tokenizer.pad(pairs)
    assert batch.shared_prefix is not None
    groups = _rows_by_prefix(batch)
    assert len(groups) == 3

    model = reranker.scorer.backend._model.base_model  # type: ignore[attr-defined]
    shapes: list[tuple[int, ...]] = []
    hook = model.register_forward_pre_hook(
        lambda _module, _args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    try:
        reused = reranker.scorer.backend.forward(batch)
    finally:
        hook.remove()

    # Each query's prefix ran once, on one row; then its rows ran only what follows it.
    lengths = batch.attention_mask.sum(axis=1)
    shared = [int(batch.shared_prefix[rows[0]]) for rows in groups]
    rests = [(len(rows), int(lengths[rows].max()) - n) for rows, n in zip(groups, shared, strict=True)]
    assert sorted(shapes) == sorted([(1, n) for n in shared] + rests)
    np.testing.assert_allclose(reused, alone, rtol=0, atol=1e-5)
    assert np.ptp(reused) > 0.1  # the scores differ: equal scores would hide a misplaced row


def test_the_full_batch_without_reuse_scores_the_same(reranker: Reranker) -> None:
    pairs = _pairs(reranker)
    batch = reranker.scorer.tokenizer.pad(pairs)
    plain = reranker.scorer.backend.forward(dataclasses.replace(batch, shared_prefix=None))
    np.testing.assert_allclose(reranker.scorer.backend.forward(batch), plain, rtol=0, atol=1e-5)


def test_requests_scored_together_score_as_each_prompt_alone(
    reranker: Reranker, alone: np.ndarray[Any, np.dtype[np.float32]]
) -> None:
    """What the micro-batcher does: the pairs of several requests (queries, instructions) share batches."""
    requests = [
        ScoreRequest(query, documents, TRUNCATION, prompt=PromptOptions(instruction=instruction))
        for query, instruction, documents in REQUESTS
    ]
    scored = reranker.scorer.score(requests, BatchingOptions(max_batch_tokens=100_000, max_batch_size=64))
    together = np.concatenate([s.logits for s in scored])
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-5)


def _rows_by_prefix(batch: EncodedBatch) -> list[list[int]]:
    assert batch.shared_prefix is not None
    groups: dict[bytes, list[int]] = {}
    for row in range(batch.size):
        groups.setdefault(bytes(batch.input_ids[row, : batch.shared_prefix[row]]), []).append(row)
    return list(groups.values())
