"""The Reranker façade: ranking sanity on a real model, ordering rules, limits and bad input.

Ordering rules, limits and input checks run on the fake backend (``fake_reranker``, token-overlap scores:
a document sharing more of the query's tokens ranks higher), in tests named ``..._fake_backend``; the ranking
sanity of a trained model and the torch backend's own facts load real models and are marked slow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from crossrank import (
    BatchingOptions,
    ConfigError,
    InputError,
    Reranker,
    RerankResult,
    ScoredDocument,
    TruncationWarning,
)
from crossrank.tools.demo import DEMO_CASES

KEYWORD_TRAPS = [
    ("apple iphone price", "The new iPhone costs 999 dollars", "Apples are a healthy fruit"),
    ("how many people live in berlin", "Berlin has a population of 3.5 million", "Paris is the capital of France"),
    ("what is panda?", "The giant panda is a bear species endemic to China.", "hi"),
    ("python programming language", "Python is a high-level programming language.", "The python is a large snake."),
]


@pytest.mark.slow
@pytest.mark.parametrize(("query", "relevant", "trap"), KEYWORD_TRAPS)
def test_relevant_above_keyword_trap(english_reranker: Reranker, query: str, relevant: str, trap: str) -> None:
    result = english_reranker.rerank(query, [trap, relevant])
    assert [r.index for r in result.results] == [1, 0]
    assert result.results[0].relevance_score > result.results[1].relevance_score


@pytest.mark.slow
def test_demo_english_case_puts_the_iphone_first(english_reranker: Reranker) -> None:
    query, documents = DEMO_CASES["en"]
    top = english_reranker.rerank(query, list(documents), top_n=1).results[0]
    assert top.document == "The new iPhone costs 999 dollars"


def test_result_shape_order_and_indices_fake_backend(fake_reranker: Reranker) -> None:
    documents = ["Paris is in France", "how many people live in Berlin", "bananas", "Berlin is Germany's capital"]
    result = fake_reranker.rerank("how many people live in Berlin", documents)
    assert isinstance(result, RerankResult)
    assert sorted(r.index for r in result.results) == [0, 1, 2, 3]
    scores = [r.score for r in result.results]
    assert scores == sorted(scores, reverse=True)
    for item in result.results:
        assert isinstance(item, ScoredDocument)
        assert item.document == documents[item.index]
        assert 0.0 <= item.relevance_score <= 1.0
    assert result.results[0].index == 1
    assert result.usage.total_tokens > 0 and result.usage.truncated_documents == 0


def test_top_n_and_return_documents_fake_backend(fake_reranker: Reranker) -> None:
    documents = ["a", "Berlin has 3.5 million people", "c", "d"]
    full = fake_reranker.rerank("berlin population", documents)
    top = fake_reranker.rerank("berlin population", documents, top_n=2, return_documents=False)
    assert [r.index for r in top.results] == [r.index for r in full.results[:2]]
    assert all(r.document is None for r in top.results)
    assert len(fake_reranker.rerank("q", documents, top_n=10).results) == 4


def test_duplicates_tie_in_the_callers_order_fake_backend(fake_reranker: Reranker) -> None:
    documents = ["same text", "Berlin has 3.5 million people", "same text", "same text"]
    result = fake_reranker.rerank("berlin population", documents)
    tied = [r for r in result.results if r.document == "same text"]
    assert [r.index for r in tied] == [0, 2, 3]
    assert len({r.score for r in tied}) == 1


def test_empty_list_empty_strings_and_unicode_fake_backend(fake_reranker: Reranker) -> None:
    assert fake_reranker.rerank("q", []).results == []
    result = fake_reranker.rerank("", ["", "🐼", "\u0000\u200b", "\ud83d"])  # includes a lone surrogate
    assert sorted(r.index for r in result.results) == [0, 1, 2, 3]
    assert all(np.isfinite(r.score) for r in result.results)


def test_ten_thousand_documents_fake_backend(fake_reranker: Reranker) -> None:
    documents = [f"document number {i} about topic {i % 97}" for i in range(10_000)]
    result = fake_reranker.rerank("topic 42", documents)
    assert len(result.results) == 10_000
    assert sorted(r.index for r in result.results) == list(range(10_000))
    # Same scores as scoring a slice on its own: windows and batches do not leak into each other.
    sample = [0, 4095, 4096, 9999]
    expected = fake_reranker.score([("topic 42", documents[i]) for i in sample])
    by_index = {r.index: r.score for r in result.results}
    np.testing.assert_allclose([by_index[i] for i in sample], expected, atol=1e-5)


def test_truncation_is_reported_fake_backend(fake_reranker: Reranker, fake_model_dir: Path) -> None:
    from tokenizers import Tokenizer

    rust = Tokenizer.from_file(str(fake_model_dir / "tokenizer.json"))  # counts without crossrank's tokenizer
    query, documents = "pandas", [" ".join(["panda"] * 1000), "short"]
    query_tokens = len(rust.encode(query, add_special_tokens=False).ids)
    document_tokens = [len(rust.encode(d, add_special_tokens=False).ids) for d in documents]
    # aggregate="first" is plain truncation (the default, "max", reads long documents in windows).
    result = fake_reranker.rerank(query, documents, aggregate="first")
    assert result.usage.truncated_documents == 1
    # XLM-R pairs: <s> query </s></s> document </s>
    assert result.usage.truncated_tokens == document_tokens[0] - (512 - 4 - query_tokens)
    assert result.usage.total_tokens == 512 + (4 + query_tokens + document_tokens[1])
    assert result.usage.chunks == 2 and result.usage.chunked_documents == 0
    windowed = fake_reranker.rerank(query, documents)
    assert windowed.usage.truncated_documents == 0 and windowed.usage.chunked_documents == 1
    with pytest.warns(TruncationWarning, match="cut to 384 tokens"):
        long_query = fake_reranker.rerank("panda " * 1000, ["short"])
    assert long_query.usage.truncated_queries == 1


def test_compute_score_semantics_fake_backend(fake_reranker: Reranker) -> None:
    single = fake_reranker.compute_score(("what is panda?", "The giant panda is a bear."))
    assert isinstance(single, float)
    listed = fake_reranker.compute_score([["what is panda?", "The giant panda is a bear."]])
    assert isinstance(listed, list) and listed == [single]
    normalized = fake_reranker.compute_score(["what is panda?", "The giant panda is a bear."], normalize=True)
    assert normalized == pytest.approx(1 / (1 + np.exp(-single)))
    assert fake_reranker.compute_score([]) == []


def test_per_call_max_length_fake_backend(fake_reranker: Reranker) -> None:
    long_document = "Berlin has a population of 3.5 million. " + "filler words " * 300
    short = fake_reranker.rerank("berlin population", [long_document], max_length=32, aggregate="first")
    assert short.usage.total_tokens == 32
    with pytest.raises(ConfigError, match="more than"):
        fake_reranker.rerank("q", ["d"], max_length=9000)  # the model reads 8192


@pytest.mark.parametrize(
    ("query", "documents", "message"),
    [
        (None, ["d"], "query must be a string"),
        ("q", "a single string", "documents must be a list"),
        ("q", ["ok", 3], r"documents\[1\] must be a string"),
        ("q", None, "documents must be a list"),
    ],
)
def test_bad_input_names_the_field_fake_backend(
    fake_reranker: Reranker, query: object, documents: object, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        fake_reranker.rerank(query, documents)  # type: ignore[arg-type]


@pytest.mark.parametrize("top_n", [0, -1, 1.5, True])
def test_bad_top_n_fake_backend(fake_reranker: Reranker, top_n: object) -> None:
    with pytest.raises(InputError, match="top_n"):
        fake_reranker.rerank("q", ["d"], top_n=top_n)  # type: ignore[arg-type]


@pytest.mark.parametrize("pairs", [[("q",)], [("q", 1)], "qd", [["q", "d", "e"]]])
def test_bad_pairs_fake_backend(fake_reranker: Reranker, pairs: object) -> None:
    with pytest.raises(InputError, match="pair"):
        fake_reranker.score(pairs)  # type: ignore[arg-type]


def test_max_length_above_the_model_limit_fake_backend(fake_model_dir: Path) -> None:
    with pytest.raises(ConfigError, match="8192"):
        Reranker(str(fake_model_dir), backend="fake", max_length=9000)


@pytest.mark.slow
def test_batch_sizes_default_to_the_backends_and_explicit_ones_win(
    english_reranker: Reranker, tiny_xlmr_dir: Path
) -> None:
    assert english_reranker.batching == BatchingOptions(max_batch_tokens=8192, max_batch_size=64)  # CPU defaults
    with Reranker(str(tiny_xlmr_dir), device="cpu", max_batch_tokens=1000) as rr:
        assert rr.batching == BatchingOptions(max_batch_tokens=1000, max_batch_size=64)


@pytest.mark.slow
def test_fake_gpu_pass_cost_is_the_backends_whatever_sizes_are_asked_for(
    tiny_xlmr_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The torch backend's batching as it would be on a GPU (the fake: no GPU here); the rest runs for real."""
    from crossrank.backends.torch import TorchBackend

    gpu = BatchingOptions(max_batch_tokens=32768, max_batch_size=512, min_pass_tokens=3000)
    monkeypatch.setattr(TorchBackend, "_batching", lambda self: gpu)
    with Reranker(str(tiny_xlmr_dir), device="cpu") as rr:
        assert rr.batching == gpu
    with Reranker(str(tiny_xlmr_dir), device="cpu", max_batch_tokens=1000) as rr:
        assert rr.batching == BatchingOptions(max_batch_tokens=1000, max_batch_size=512, min_pass_tokens=3000)


@pytest.mark.parametrize("option", ["max_batch_tokens", "max_batch_size"])
def test_bad_batch_sizes_fail_before_any_model_loads(option: str) -> None:
    with pytest.raises(ConfigError, match=f"{option} must be at least 1"):
        Reranker("/no/such/model", **{option: 0})


def test_model_facts_fake_backend(fake_reranker: Reranker, fake_model_dir: Path) -> None:
    assert (fake_reranker.device, fake_reranker.dtype) == ("cpu", "float32")
    assert fake_reranker.model_max_length == 8192  # from config.json: 8194 positions minus the RoBERTa offset
    assert fake_reranker.load_seconds > 0
    assert fake_reranker.batching == BatchingOptions(max_batch_tokens=8192, max_batch_size=64)  # the backend's
    with Reranker(str(fake_model_dir), backend="fake", max_batch_tokens=1000) as explicit:
        assert explicit.batching == BatchingOptions(max_batch_tokens=1000, max_batch_size=64)


@pytest.mark.slow
def test_model_facts(english_reranker: Reranker, tiny_reranker: Reranker) -> None:
    assert english_reranker.device == "cpu"
    assert english_reranker.dtype == "float32"
    assert english_reranker.model_max_length == 512
    assert tiny_reranker.model_max_length == 8192  # 8194 positions minus the RoBERTa offset
    assert english_reranker.load_seconds > 0


@pytest.mark.slow
def test_bfloat16_scores_stay_float32_and_close(english_model_dir: Path, english_reranker: Reranker) -> None:
    pairs = [(q, d) for q, d, _ in KEYWORD_TRAPS] + [(q, t) for q, _, t in KEYWORD_TRAPS]
    with Reranker(str(english_model_dir), device="cpu", dtype="bfloat16") as half:
        assert half.dtype == "bfloat16"
        got = half.score(pairs)
    expected = english_reranker.score(pairs)
    np.testing.assert_allclose(got, expected, atol=0.25)
    assert [g > 0 for g in got] == [e > 0 for e in expected]
