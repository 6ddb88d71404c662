"""Window planning, aggregation maths and the long-document options (pure, no model)."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from crossrank import ChunkingOptions, ConfigError, TruncationOptions
from crossrank.config import Aggregation
from crossrank.engine.aggregation import aggregate, best_window
from crossrank.engine.chunking import count_windows, plan_windows, window_span


def _check_plan(tokens: int, size: int, overlap: int, max_windows: int, max_tokens: int | None, left: bool) -> None:
    plan = plan_windows(
        tokens,
        size=size,
        overlap=overlap,
        max_windows=max_windows,
        max_tokens=max_tokens,
        direction="left" if left else "right",
    )
    windows = plan.windows
    kept = tokens - plan.dropped
    assert 1 <= len(windows) <= max_windows
    assert all(0 < e - s <= size for s, e in windows) or windows == [(0, 0)]
    # Contiguous cover of the kept part, which sits at the start (right cut) or the end (left cut).
    assert windows[0][0] == (tokens - kept if left else 0)
    assert windows[-1][1] == (tokens if left else kept)
    for (s1, e1), (s2, _e2) in itertools.pairwise(windows):
        assert s1 < s2 <= e1, "windows overlap or touch, in order"
    if len(windows) > 1:
        assert all(e - s == size for s, e in windows), "every window is full length"
        # Every neighbouring pair overlaps by exactly `overlap`, except where the last window was moved back.
        inner = windows[:-1]
        for (_, e1), (s2, _) in itertools.pairwise(inner):
            assert e1 - s2 == overlap
        assert min(e1 - s2 for (_, e1), (s2, _) in itertools.pairwise(windows)) >= overlap
    capped = tokens if max_tokens is None else min(tokens, max_tokens)
    assert plan.needed == count_windows(capped, size, overlap)
    if plan.needed <= max_windows:
        assert kept == capped and len(windows) == plan.needed
    else:
        assert kept == size + (max_windows - 1) * (size - overlap)


@pytest.mark.parametrize("seed", range(5))
def test_windows_cover_the_kept_tokens_within_the_size(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(400):
        size = rng.randint(1, 300)
        overlap = rng.randint(0, size // 2)
        tokens = rng.choice([0, 1, size - 1, size, size + 1, rng.randint(0, 5000)])
        max_tokens = rng.choice([None, rng.randint(1, 6000)])
        _check_plan(max(tokens, 0), size, overlap, rng.randint(1, 80), max_tokens, rng.random() < 0.5)


def test_window_examples() -> None:
    assert plan_windows(0, size=10, overlap=2, max_windows=5).windows == [(0, 0)]
    assert plan_windows(10, size=10, overlap=2, max_windows=5).windows == [(0, 10)]
    assert plan_windows(26, size=10, overlap=2, max_windows=5).windows == [(0, 10), (8, 18), (16, 26)]
    # The last window is moved back to be full length.
    assert plan_windows(20, size=10, overlap=2, max_windows=5).windows == [(0, 10), (8, 18), (10, 20)]
    capped = plan_windows(100, size=10, overlap=2, max_windows=2)
    assert (capped.windows, capped.dropped, capped.needed) == ([(0, 10), (8, 18)], 82, 13)
    left = plan_windows(100, size=10, overlap=2, max_windows=2, direction="left")
    assert (left.windows, left.dropped) == ([(82, 92), (90, 100)], 82)
    cut = plan_windows(100, size=10, overlap=0, max_windows=50, max_tokens=25, direction="left")
    assert (cut.windows, cut.dropped) == ([(75, 85), (85, 95), (90, 100)], 75)


def test_spans_from_offsets() -> None:
    offsets = [(0, 5), (6, 11), (11, 12), (14, 15), (14, 16), (17, 20)]  # ... "▁" "美元" start together
    assert window_span(offsets, 0, 2, 20, whole=False) == (0, 11)
    assert window_span(offsets, 1, 3, 20, whole=False) == (6, 12)
    assert window_span(offsets, 2, 4, 20, whole=False) == (11, 14), "a bare ▁ does not claim the next symbol"
    assert window_span(offsets, 3, 6, 20, whole=False) == (14, 20)
    assert window_span(offsets, 4, 5, 20, whole=False) == (14, 16)
    assert window_span(offsets, 0, 6, 23, whole=True) == (0, 23)
    assert window_span([], 0, 0, 3, whole=False) == (0, 0)


def _direct(scores: list[float], aggregation: str) -> float:
    if aggregation == "max":
        return max(scores)
    if aggregation == "mean":
        return sum(scores) / len(scores)
    if aggregation == "first":
        return scores[0]
    k = int(aggregation.split(":")[1])
    top = sorted(scores, reverse=True)[:k]
    return sum(top) / len(top)


@pytest.mark.parametrize("aggregation", ["max", "mean", "first", "topk_mean:1", "topk_mean:3", "topk_mean:50"])
def test_aggregation_equals_the_direct_computation(aggregation: str) -> None:
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 17):
        scores = rng.normal(0, 4, n).astype(np.float32)
        got = aggregate(scores, Aggregation.parse(aggregation))
        assert got == pytest.approx(_direct([float(x) for x in scores], aggregation), rel=1e-6, abs=1e-6)
    one = np.array([-3.123456789], dtype=np.float32)
    assert np.float32(aggregate(one, Aggregation.parse(aggregation))) == one[0], "one window: its logit, bit for bit"


def test_best_window_is_the_first_of_equals() -> None:
    assert best_window(np.array([1.0, 3.0, 3.0, 2.0], dtype=np.float32)) == 1


@pytest.mark.parametrize("text", ["max", "mean", "first", "topk_mean:1", "topk_mean:12", " max "])
def test_aggregation_names(text: str) -> None:
    assert str(Aggregation.parse(text)) == text.strip()


@pytest.mark.parametrize("text", ["", "median", "topk_mean", "topk_mean:0", "topk_mean:-1", "max:2", "MAX"])
def test_bad_aggregation_names_the_choices(text: str) -> None:
    with pytest.raises(ConfigError, match="max, mean, first, topk_mean:K"):
        ChunkingOptions(aggregate=text)


def test_chunking_validation_and_window() -> None:
    with pytest.raises(ConfigError, match="chunk_tokens"):
        ChunkingOptions(chunk_tokens=0)
    with pytest.raises(ConfigError, match="overlap_tokens"):
        ChunkingOptions(overlap_tokens=-1)
    with pytest.raises(ConfigError, match="at most half"):
        ChunkingOptions(chunk_tokens=100, overlap_tokens=51)
    with pytest.raises(ConfigError, match="max_chunks_per_doc"):
        ChunkingOptions(max_chunks_per_doc=0)
    assert ChunkingOptions().window(500) == (500, 62)  # the room, 1/8 overlap
    assert ChunkingOptions(chunk_tokens=128, overlap_tokens=16).window(500) == (128, 16)
    assert ChunkingOptions(chunk_tokens=1000, overlap_tokens=400).window(100) == (100, 50), "clamped to the room"
    assert ChunkingOptions().window(1) == (1, 0)


def test_truncation_validation() -> None:
    with pytest.raises(ConfigError, match="truncation_direction 'up'"):
        TruncationOptions(truncation_direction="up")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="long_query 'cut'"):
        TruncationOptions(long_query="cut")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="max_tokens_per_doc"):
        TruncationOptions(max_tokens_per_doc=0)
    defaults = TruncationOptions()
    assert (defaults.truncation_direction, defaults.truncate, defaults.long_query, defaults.max_tokens_per_doc) == (
        "right",
        True,
        "truncate",
        None,
    )
