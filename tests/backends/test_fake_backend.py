"""FakeBackend: deterministic token-overlap scores, latency and failures on demand, counters."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from crossrank import InferenceError, Reranker
from crossrank.backends import fake as fake_module
from crossrank.backends.base import Backend, EncodedBatch
from crossrank.backends.fake import FakeBackend
from crossrank.backends.registry import load_backend
from crossrank.config import RuntimeOptions

# XLM-R's template: <s> query </s></s> document </s>, padded with 1.
QUERY = [100, 101, 102]
RELEVANT = [100, 101, 102, 7]
HALF = [100, 9, 8]
UNRELATED = [5, 6]


def _row(query: list[int], document: list[int]) -> list[int]:
    return [0, *query, 2, 2, *document, 2]


def _batch(*rows: list[int], pad_to: int = 0) -> EncodedBatch:
    length = max(pad_to, *(len(r) for r in rows))
    ids = np.ones((len(rows), length), dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = row, 1
    return EncodedBatch(ids, mask)


def test_the_fake_is_a_backend() -> None:
    backend = FakeBackend()
    assert isinstance(backend, Backend)
    assert (backend.name, backend.device, backend.dtype, backend.runs_pairs_alone) == ("fake", "cpu", "float32", False)


def test_documents_sharing_more_query_tokens_score_higher() -> None:
    batch = _batch(_row(QUERY, RELEVANT), _row(QUERY, HALF), _row(QUERY, UNRELATED))
    logits = FakeBackend().forward(batch)
    assert logits.dtype == np.float32 and logits.shape == (3,)
    assert logits[0] > logits[1] > logits[2]
    # 6 * overlap - 3, plus a jitter in [0, 0.1)
    assert 3 <= logits[0] < 3.1 and -1 <= logits[1] < -0.9 and -3 <= logits[2] < -2.9


def test_scores_are_deterministic_across_instances_and_calls() -> None:
    batch = _batch(_row(QUERY, RELEVANT), _row([5], [5, 5, 6]), _row(QUERY, UNRELATED))
    first = FakeBackend().forward(batch)
    np.testing.assert_array_equal(first, FakeBackend().forward(batch))
    np.testing.assert_array_equal(first, FakeBackend().forward(batch))
    # The checksum jitter separates pairs of equal overlap.
    assert len(set(FakeBackend().forward(_batch(_row(QUERY, UNRELATED), _row(QUERY, [11, 12]))).tolist())) == 2


def test_a_pair_scores_the_same_whatever_its_batch_and_padding() -> None:
    pair = _row(QUERY, HALF)
    alone = FakeBackend().forward(_batch(pair))[0]
    padded = FakeBackend().forward(_batch(pair, pad_to=64))[0]
    in_company = FakeBackend().forward(_batch(_row(UNRELATED, list(range(3, 40))), pair, _row(QUERY, RELEVANT)))[1]
    assert alone == padded == in_company


def test_bert_templates_split_at_their_separator() -> None:
    cls, sep = 101, 102
    ids = np.array([[cls, 7, 8, sep, 7, 8, sep], [cls, 7, 8, sep, 9, 9, sep]], dtype=np.int64)
    mask = np.ones_like(ids)
    logits = FakeBackend().forward(EncodedBatch(ids, mask, token_type_ids=np.zeros_like(ids)))
    assert logits[0] >= 3 and logits[1] < -2.9


def test_latency_per_pass_and_per_token(monkeypatch: pytest.MonkeyPatch) -> None:
    batch = _batch(_row(QUERY, RELEVANT), pad_to=20)  # 20 computed tokens
    started = time.perf_counter()
    FakeBackend(latency=0.05).forward(batch)
    assert time.perf_counter() - started >= 0.05  # it really waits
    pauses: list[float] = []
    monkeypatch.setattr(fake_module.time, "sleep", pauses.append)
    FakeBackend().forward(batch)
    FakeBackend(latency=0.05).forward(batch)
    FakeBackend(latency_per_token=0.005).forward(batch)
    FakeBackend(latency=0.01, latency_per_token=0.001).forward(batch)
    assert pauses == pytest.approx([0.05, 0.1, 0.03])


def test_failures_on_chosen_calls_or_on_every_call() -> None:
    batch = _batch(_row(QUERY, RELEVANT))
    backend = FakeBackend(fail_calls={2})
    backend.forward(batch)
    with pytest.raises(InferenceError, match="call 2"):
        backend.forward(batch)
    backend.forward(batch)
    always = FakeBackend(fail_all=True)
    for _ in range(2):
        with pytest.raises(InferenceError):
            always.forward(batch)
    assert always.calls == 2


def test_counters_cover_calls_pairs_real_tokens_and_batch_sizes() -> None:
    backend = FakeBackend()
    backend.forward(_batch(_row(QUERY, RELEVANT), _row(QUERY, UNRELATED), pad_to=30))
    backend.forward(_batch(_row(QUERY, HALF)))
    assert backend.calls == 2
    assert backend.pairs == 3
    assert backend.tokens == len(_row(QUERY, RELEVANT)) + len(_row(QUERY, UNRELATED)) + len(_row(QUERY, HALF))
    assert backend.batch_sizes == [2, 1]
    assert not backend.closed
    backend.close()
    assert backend.closed


def test_the_registry_loads_it_and_ignores_options_it_does_not_use(tmp_path: Path) -> None:
    runtime = RuntimeOptions(device="cpu")
    backend = load_backend(
        "fake", tmp_path, runtime=runtime, allow_pickle=False, trust_remote_code=False, model_digest="digest"
    )
    assert isinstance(backend, FakeBackend)
    assert isinstance(FakeBackend(tmp_path, some_option_added_later=1), FakeBackend)


def test_a_reranker_on_the_fake_backend_ranks_by_shared_words(fake_reranker: Reranker) -> None:
    documents = ["cats sleep all day", "giant pandas eat bamboo", "what do giant pandas eat"]
    result = fake_reranker.rerank("what do giant pandas eat", documents)
    assert [r.index for r in result.results] == [2, 1, 0]
    assert fake_reranker.scorer.backend.name == "fake"
    again = fake_reranker.rerank("what do giant pandas eat", ["x " * 300, documents[1]])
    assert again.results[0].index == 1
    assert again.results[0].score == result.results[1].score  # the same pair in another, longer batch
