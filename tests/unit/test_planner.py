from __future__ import annotations

import pytest

from crossrank.config import BatchingOptions
from crossrank.engine.planner import plan_batches


def _padded(batch: list[int], lengths: list[int]) -> int:
    return len(batch) * max(lengths[i] for i in batch)


@pytest.mark.parametrize("seed", range(5))
def test_every_item_once_and_within_budget(seed: int) -> None:
    import random

    rng = random.Random(seed)
    lengths = [rng.randint(1, 600) for _ in range(500)]
    options = BatchingOptions(max_batch_tokens=2048, max_batch_size=16)
    batches = plan_batches(lengths, options)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= 16
        assert _padded(batch, lengths) <= 2048 or len(batch) == 1


def test_longest_first_and_stable_for_ties() -> None:
    lengths = [5, 100, 6, 100, 5]
    batches = plan_batches(lengths, BatchingOptions(max_batch_tokens=200, max_batch_size=8))
    assert batches == [[1, 3], [2, 0, 4]]


def test_item_longer_than_budget_runs_alone() -> None:
    assert plan_batches([10, 5000, 10], BatchingOptions(max_batch_tokens=100)) == [[1], [0, 2]]


def test_sorting_keeps_padding_small() -> None:
    lengths = [10, 500] * 50
    batches = plan_batches(lengths, BatchingOptions(max_batch_tokens=5000, max_batch_size=64))
    padded = sum(_padded(b, lengths) for b in batches)
    assert padded == sum(lengths)  # equal lengths share batches: no padding at all


def test_empty() -> None:
    assert plan_batches([], BatchingOptions()) == []
