"""Long documents on the real tokenizers and models: windows, spans, aggregation, limits and memory.

Tests named ``..._fake_backend`` run the engine on the fake backend (token-overlap scores) with the real XLM-R
tokenizer: windows, counts, limits and memory do not depend on the model's numbers. Those comparing scores with
transformers or relying on a trained model's judgement load the real models and are marked slow."""

from __future__ import annotations

import random
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from cases import LONG_EN, LONG_ZH, PAIRS
from crossrank import (
    BatchingOptions,
    ChunkingOptions,
    InputTooLongError,
    Reranker,
    TruncationOptions,
    TruncationWarning,
)
from crossrank.backends.base import Backend, EncodedBatch, WrappedBackend
from crossrank.config import Aggregation
from crossrank.engine import scorer as scorer_module
from crossrank.engine.aggregation import aggregate
from crossrank.engine.chunking import count_windows, plan_windows, window_span
from crossrank.engine.scorer import Scorer, ScoreRequest
from crossrank.engine.tokenizer import PairTokenizer

QUERY = "how many people live in berlin"
SENTENCE = "Berlin has a population of about 3.7 million inhabitants, making it the most populous city in Germany."
_TOPICS = [
    "The committee reviewed the quarterly budget for road maintenance.",
    "Gardeners recommend watering tomato plants early in the morning.",
    "The orchestra rehearsed the symphony for three hours on Tuesday.",
    "Old sailing ships used canvas sails and wooden masts.",
    "The bakery introduced a new sourdough recipe last spring.",
    "Chess players often study famous openings from the last century.",
]


def _filler(sentences: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(_TOPICS) for _ in range(sentences))


BURIED = _filler(60) + " " + SENTENCE
TEXTS = {
    "english": LONG_EN[:4000],
    "chinese": LONG_ZH[:1600],
    "mixed": LONG_EN[:1200] + " 熊猫 " + LONG_ZH[:600] + " iPhone 15 售价 999 美元",
    "emoji": "🐼🐼 pandas are cute 😍🎋 and eat bamboo 🇺🇸 " * 30,
    "whitespace": "  lead   \t\n\n spaces  and\u3000ideographic  space \u00a0 nbsp  " * 20,
}


class Recording(WrappedBackend):
    """The real backend, plus a record of every batch it was given (to check what the model read)."""

    def __init__(self, inner: Backend) -> None:
        super().__init__(inner)
        self.batches: list[EncodedBatch] = []

    def forward(self, batch: EncodedBatch) -> npt.NDArray[np.float32]:
        self.batches.append(batch)
        return self.inner.forward(batch)


@pytest.fixture(scope="module")
def fake_scorer(fake_reranker: Reranker) -> Scorer:
    scorer = fake_reranker.scorer
    assert isinstance(scorer, Scorer)
    return scorer


@pytest.fixture(scope="module")
def count_tokens(fake_model_dir: Path) -> Callable[[str], int]:
    """A text's tokens by the tokenizers library alone (not crossrank's PairTokenizer)."""
    from tokenizers import Tokenizer

    rust = Tokenizer.from_file(str(fake_model_dir / "tokenizer.json"))
    return lambda text: len(rust.encode(text, add_special_tokens=False).ids)


_T512 = TruncationOptions()
_BATCHING = BatchingOptions()


def _recording(scorer: Scorer) -> tuple[Scorer, Recording]:
    recording = Recording(scorer.backend)
    return Scorer(scorer.tokenizer, recording), recording


# --- windows and spans with the real XLM-R tokenizer -------------------------------------------------


@pytest.mark.parametrize("name", list(TEXTS))
@pytest.mark.parametrize(
    ("max_length", "chunk_tokens", "overlap_tokens"), [(64, None, None), (512, 37, 5), (128, 16, 0)]
)
def test_xlmr_windows_fit_cover_overlap_and_slice_the_text(
    xlmr_pair_tokenizer: PairTokenizer, name: str, max_length: int, chunk_tokens: int | None, overlap_tokens: int | None
) -> None:
    tokenizer = xlmr_pair_tokenizer
    rust = tokenizer._tokenizer  # the same Rust tokenizer, to decode windows and normalise text
    truncation = TruncationOptions(max_length=max_length)
    chunking = ChunkingOptions(chunk_tokens=chunk_tokens, overlap_tokens=overlap_tokens, max_chunks_per_doc=1000)
    text = TEXTS[name]
    query = tokenizer.encode_query("where do pandas live 熊猫", truncation)
    size, overlap = chunking.window(tokenizer.document_room(query, truncation))
    encoding = tokenizer.encode_documents([text])[0]
    plan = plan_windows(len(encoding.ids), size=size, overlap=overlap, max_windows=chunking.max_chunks_per_doc)
    assert len(plan.windows) > 3 and plan.dropped == 0
    assert overlap == (overlap_tokens if overlap_tokens is not None else size // 8)
    covered: list[int] = []
    for number, (start, end) in enumerate(plan.windows):
        pair = tokenizer.build_pair(query, encoding.ids[start:end], truncation)
        assert len(pair.ids) <= max_length and pair.truncated_tokens == 0
        covered.extend(range(start, end))
        if 0 < number < len(plan.windows) - 1:
            assert plan.windows[number - 1][1] - start == overlap
        a, b = window_span(encoding.offsets, start, end, len(text), whole=False)
        # The span holds exactly the window's text: what the model read, decoded, is the span's
        # text after the tokenizer's own normalisation (whitespace aside, which SentencePiece folds).
        read = "".join(rust.decode(encoding.ids[start:end]).split())
        assert read == "".join(rust.normalizer.normalize_str(text[a:b]).split()), (name, number)
    assert sorted(set(covered)) == list(range(len(encoding.ids))), "the windows cover every token"


def test_scorer_pairs_never_pass_max_length_and_are_all_counted_fake_backend(fake_scorer: Scorer) -> None:
    scorer, recording = _recording(fake_scorer)
    truncation = TruncationOptions(max_length=96)
    requests = [
        ScoreRequest(query="熊猫 pandas", documents=list(TEXTS.values()), truncation=truncation),
        ScoreRequest(
            query="x",
            documents=["short", LONG_EN],
            truncation=truncation,
            chunking=ChunkingOptions(chunk_tokens=40, max_chunks_per_doc=1000),
        ),
    ]
    scored = scorer.score(requests, _BATCHING)
    assert all(batch.input_ids.shape[1] <= 96 for batch in recording.batches)
    pairs = sum(batch.size for batch in recording.batches)
    assert pairs == sum(s.usage.chunks for s in scored) == sum(int(s.chunks.sum()) for s in scored)
    assert sum(int(b.attention_mask.sum()) for b in recording.batches) == sum(s.usage.total_tokens for s in scored)
    assert scored[1].chunks[0] == 1 and scored[1].chunks[1] > 10
    for request, result in zip(requests, scored, strict=True):
        for text, (start, end) in zip(request.documents, result.spans, strict=True):
            assert 0 <= start <= end <= len(text)


# --- aggregation against a direct per-window computation with transformers ---------------------------


def _reference_windows(model_dir: Path, query: str, document: str, max_length: int) -> tuple[list[float], list[str]]:
    """Each window's logit and text, built with transformers alone (ids, offsets and the model)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    hf = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32).eval()
    q = hf(query, add_special_tokens=False)["input_ids"]
    encoded = hf(document, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    size = max_length - 3 - len(q)  # [CLS] q [SEP] window [SEP]
    stride = size - size // 8
    starts = [*range(0, len(ids) - size, stride), len(ids) - size]
    scores, texts = [], []
    with torch.inference_mode():
        for s in starts:
            window = ids[s : s + size]
            pair = [hf.cls_token_id, *q, hf.sep_token_id, *window, hf.sep_token_id]
            types = [0] * (len(q) + 2) + [1] * (len(window) + 1)
            out = model(
                input_ids=torch.tensor([pair]),
                attention_mask=torch.ones(1, len(pair), dtype=torch.long),
                token_type_ids=torch.tensor([types]),
            )
            scores.append(float(out.logits[0, 0]))
            texts.append(document[offsets[s][0] : offsets[s + size - 1][1]])
    return scores, texts


@pytest.mark.slow
@pytest.mark.parametrize("aggregation", ["max", "mean", "first", "topk_mean:2"])
def test_aggregation_equals_per_window_scores_from_transformers(english_model_dir: Path, aggregation: str) -> None:
    document = BURIED[:2600] + " " + SENTENCE + " " + _filler(8, seed=1)
    window_scores, window_texts = _reference_windows(english_model_dir, QUERY, document, 128)
    assert len(window_scores) >= 5
    with Reranker(
        str(english_model_dir), device="cpu", dtype="float32", max_length=128, aggregate=aggregation
    ) as reranker:
        (result,) = reranker.rerank(QUERY, [document]).results
    scores = window_scores[:1] if aggregation == "first" else window_scores
    expected = aggregate(np.asarray(scores, dtype=np.float32), Aggregation.parse(aggregation))
    direct = {"max": max(scores), "mean": float(np.mean(scores)), "first": scores[0]}
    assert expected == pytest.approx(direct.get(aggregation, float(np.mean(sorted(scores)[-2:]))), abs=1e-6)
    assert result.score == pytest.approx(expected, abs=1e-4)
    assert result.chunks == len(scores)
    assert result.span is not None
    best = int(np.argmax(scores))
    assert document[result.span.start : result.span.end] == window_texts[best]


# --- what long-document scoring is for ---------------------------------------------------------------


@pytest.mark.slow
def test_a_sentence_buried_at_the_end_is_found_by_max_and_missed_by_first(english_model_dir: Path) -> None:
    documents = [BURIED, "Paris is the capital of France."]
    with Reranker(str(english_model_dir), device="cpu", dtype="float32", max_length=128) as reranker:
        first = reranker.rerank(QUERY, documents, aggregate="first")
        best = reranker.rerank(QUERY, documents)  # the default, max
        tail = reranker.rerank(QUERY, documents, aggregate="first", truncation_direction="left")
    by_index = {r.index: r for r in first.results}
    assert [r.index for r in first.results] == [1, 0], "truncation never reads the sentence"
    assert first.usage.truncated_documents == 1
    assert by_index[0].span is not None and SENTENCE not in BURIED[by_index[0].span.start : by_index[0].span.end]
    top = best.results[0]
    assert top.index == 0 and top.chunks > 4 and best.usage.truncated_documents == 0
    assert top.span is not None and SENTENCE in BURIED[top.span.start : top.span.end]
    assert top.span.end == len(BURIED) and top.span.end - top.span.start < len(BURIED) / 4
    assert top.score > by_index[0].score + 5
    # left truncation keeps the end of the document, where the sentence is
    assert tail.results[0].index == 0 and tail.results[0].span is not None
    assert SENTENCE in BURIED[tail.results[0].span.start :]


def test_documents_that_fit_score_exactly_as_unchunked_fake_backend(fake_model_dir: Path) -> None:
    short = [(q, d) for q, d in PAIRS if len(d) < 300]
    with Reranker(str(fake_model_dir), backend="fake") as truncating:
        truncating.chunking = ChunkingOptions(aggregate="first")
        expected = truncating.score(short)
        for aggregation in ("max", "mean", "topk_mean:3"):
            truncating.chunking = ChunkingOptions(aggregate=aggregation)
            assert truncating.score(short) == expected, aggregation  # bit for bit
        result = truncating.rerank("what is panda?", [d for _, d in short])
    for item in result.results:
        assert item.chunks == 1
        assert item.span is not None and (item.span.start, item.span.end) == (0, len(short[item.index][1]))
    assert result.usage.chunks == len(short) and result.usage.chunked_documents == 0


def test_an_explicit_smaller_window_splits_a_document_that_would_fit_fake_backend(fake_reranker: Reranker) -> None:
    document = _filler(12) + " " + SENTENCE  # ~150 tokens: one pair at max_length 512
    whole = fake_reranker.rerank(QUERY, [document]).results[0]
    windows = fake_reranker.rerank(QUERY, [document], chunk_tokens=40, overlap_tokens=10).results[0]
    assert whole.chunks == 1 and windows.chunks > 3
    assert windows.span is not None and SENTENCE[-20:] in document[windows.span.start : windows.span.end]


# --- truncation controls -----------------------------------------------------------------------------


def test_truncate_false_names_the_token_count_and_the_limit_fake_backend(
    fake_reranker: Reranker, count_tokens: Callable[[str], int]
) -> None:
    n = count_tokens(BURIED)
    room = 512 - 4 - count_tokens(QUERY)  # <s> query </s></s> document </s>
    with pytest.raises(InputTooLongError) as plain:
        fake_reranker.rerank(QUERY, ["ok", BURIED], aggregate="first", truncate=False)
    assert (plain.value.field, plain.value.tokens, plain.value.limit) == ("documents[1]", n, room)
    assert f"documents[1] has {n} tokens, more than the {room}" in str(plain.value)
    with pytest.raises(InputTooLongError) as capped:
        fake_reranker.rerank(QUERY, [BURIED], max_tokens_per_doc=100, truncate=False)
    assert (capped.value.tokens, capped.value.limit) == (n, 100) and "max_tokens_per_doc" in str(capped.value)
    with pytest.raises(InputTooLongError) as chunks:
        fake_reranker.rerank(QUERY, [BURIED + " " + BURIED], max_chunks_per_doc=1, truncate=False, aggregate="max")
    assert chunks.value.limit == room and "max_chunks_per_doc=1" in str(chunks.value)
    # Windows read everything, so a long document is no error with aggregate="max".
    fine = fake_reranker.rerank(QUERY, [BURIED], truncate=False)
    assert fine.usage.truncated_tokens == 0 and fine.results[0].chunks > 1


def test_truncate_false_fails_before_the_model_runs_for_any_request_fake_backend(fake_scorer: Scorer) -> None:
    scorer, recording = _recording(fake_scorer)
    good = ScoreRequest(query=QUERY, documents=["fine", BURIED], truncation=_T512)
    strict = TruncationOptions(truncate=False)
    bad = ScoreRequest(
        query=QUERY, documents=["ok", BURIED], truncation=strict, chunking=ChunkingOptions(aggregate="first")
    )
    with pytest.raises(InputTooLongError, match=r"documents\[1\]"):
        scorer.score([good, bad], _BATCHING)
    assert recording.batches == []


def test_max_tokens_per_doc_cuts_before_windowing_fake_backend(
    fake_reranker: Reranker, count_tokens: Callable[[str], int]
) -> None:
    n = count_tokens(BURIED)
    right = fake_reranker.rerank(QUERY, [BURIED], max_tokens_per_doc=300, chunk_tokens=100, overlap_tokens=20)
    assert right.usage.truncated_documents == 1 and right.usage.truncated_tokens == n - 300
    assert right.results[0].chunks == count_windows(300, 100, 20)
    assert right.results[0].span is not None and right.results[0].span.end < len(BURIED) / 3
    left = fake_reranker.rerank(
        QUERY, [BURIED], max_tokens_per_doc=300, chunk_tokens=100, overlap_tokens=20, truncation_direction="left"
    )
    assert left.usage.truncated_tokens == n - 300
    assert left.results[0].span is not None and SENTENCE in BURIED[left.results[0].span.start :]


def test_max_chunks_per_doc_caps_the_windows_fake_backend(
    fake_reranker: Reranker, count_tokens: Callable[[str], int]
) -> None:
    n = count_tokens(BURIED)
    capped = fake_reranker.rerank(QUERY, [BURIED, "short"], chunk_tokens=100, overlap_tokens=20, max_chunks_per_doc=3)
    by_index = {r.index: r for r in capped.results}
    assert by_index[0].chunks == 3 and by_index[1].chunks == 1
    assert capped.usage.chunks == 4 and capped.usage.truncated_tokens == n - (100 + 2 * 80)
    assert by_index[0].span is not None and SENTENCE not in BURIED[by_index[0].span.start : by_index[0].span.end]


def test_a_very_long_query_is_cut_with_a_warning_or_rejected_fake_backend(fake_reranker: Reranker) -> None:
    query = "where do giant pandas live " * 400
    with pytest.warns(TruncationWarning, match="cut to 384 tokens"):
        result = fake_reranker.rerank(query, [LONG_EN, "pandas live in Sichuan"])
    assert result.usage.truncated_queries == 1
    # The query keeps its cap; the document still gets the rest of each pair, in windows.
    by_index = {r.index: r for r in result.results}
    assert by_index[0].chunks > 10 and result.usage.truncated_tokens == 0
    with pytest.raises(InputTooLongError) as rejected:
        fake_reranker.rerank(query, ["d"], long_query="reject")
    assert rejected.value.field == "query" and rejected.value.limit == 384 and rejected.value.tokens > 2000
    with pytest.raises(InputTooLongError, match="query has"):
        fake_reranker.rerank(query, ["d"], truncate=False)


# --- memory ------------------------------------------------------------------------------------------


def test_a_200k_character_document_in_bounded_memory_fake_backend(fake_scorer: Scorer) -> None:
    document = _filler(3400, seed=2)[:200_000]
    assert len(document) == 200_000
    request = ScoreRequest(
        query=QUERY, documents=[document], truncation=_T512, chunking=ChunkingOptions(max_chunks_per_doc=1000)
    )
    tracemalloc.start()
    try:
        (scored,) = fake_scorer.score([request], _BATCHING)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    tokens = len(fake_scorer.tokenizer.encode_documents([document])[0].ids)
    room = 512 - 4 - len(fake_scorer.tokenizer.encode_query(QUERY, _T512).ids)
    assert scored.chunks[0] == count_windows(tokens, room, room // 8) > 80
    assert scored.usage.truncated_tokens == 0 and 0 <= scored.spans[0, 0] < scored.spans[0, 1] <= len(document)
    # Python-side peak: the document's ids and offsets plus one batch of pairs, not all windows at once.
    assert peak < 60 * 2**20, f"peak {peak / 2**20:.1f} MiB"


def test_small_windows_and_groups_give_the_same_scores_fake_backend(
    fake_scorer: Scorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    documents = [_filler(n, seed=n) for n in (1, 40, 3, 90, 2, 60)] * 3 + [LONG_ZH, "", "🐼"]
    requests = [
        ScoreRequest(query=QUERY, documents=documents, truncation=TruncationOptions(max_length=64)),
        ScoreRequest(
            query="熊猫",
            documents=documents[::-1],
            truncation=TruncationOptions(max_length=128),
            chunking=ChunkingOptions(aggregate="mean"),
        ),
    ]
    expected = fake_scorer.score(requests, _BATCHING)
    held: list[int] = []
    grouped: list[int] = []
    real_plan, real_encode = scorer_module.plan_batches, fake_scorer.tokenizer.encode_documents
    monkeypatch.setattr(scorer_module, "_WINDOW", 7)
    monkeypatch.setattr(scorer_module, "_GROUP_CHARS", 3000)
    monkeypatch.setattr(
        scorer_module, "plan_batches", lambda lengths, b: held.append(len(lengths)) or real_plan(lengths, b)
    )
    monkeypatch.setattr(
        fake_scorer.tokenizer,
        "encode_documents",
        lambda texts: grouped.append(sum(map(len, texts))) or real_encode(texts),
    )
    got = fake_scorer.score(requests, _BATCHING)
    assert max(held) <= 7 and len(held) > 20
    assert max(grouped) < 3000 + max(map(len, documents)) and len(grouped) > 5
    for a, b in zip(expected, got, strict=True):
        np.testing.assert_allclose(a.logits, b.logits, atol=1e-5)
        np.testing.assert_array_equal(a.spans, b.spans)
        np.testing.assert_array_equal(a.chunks, b.chunks)
        assert a.usage == b.usage


def test_a_thousand_long_documents_fake_backend(fake_scorer: Scorer) -> None:
    documents = [_filler(40, seed=i) for i in range(1000)]  # ~2,500 characters each
    truncation = TruncationOptions(max_length=256)
    (scored,) = fake_scorer.score([ScoreRequest(query=QUERY, documents=documents, truncation=truncation)], _BATCHING)
    assert scored.logits.shape == (1000,) and np.isfinite(scored.logits).all()
    assert scored.usage.chunked_documents == 1000 and scored.usage.chunks == int(scored.chunks.sum()) > 2000
