from __future__ import annotations

import pytest

from crossrank.config import BatchingOptions
from crossrank.engine.planner import PASS_COST_TOKENS, plan_batches
from crossrank.errors import ConfigError
from reference import plain_plan


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


def _cost(batches: list[list[int]], lengths: list[int], min_pass: int = 0) -> int:
    return sum(max(_padded(b, lengths), min_pass) + PASS_COST_TOKENS for b in batches)


@pytest.mark.parametrize("seed", range(20))
def test_least_padding_of_all_cuts(seed: int) -> None:
    import itertools
    import random

    rng = random.Random(seed)
    lengths = [rng.randint(1, 400) for _ in range(9)]
    options = BatchingOptions(max_batch_tokens=900, max_batch_size=4)
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    best = None
    for marks in itertools.product((False, True), repeat=len(order) - 1):
        cuts = [0] + [i + 1 for i, m in enumerate(marks) if m] + [len(order)]
        batches = [order[a:b] for a, b in itertools.pairwise(cuts)]
        if all(len(b) <= 4 and (_padded(b, lengths) <= 900 or len(b) == 1) for b in batches):
            cost = _cost(batches, lengths)
            best = cost if best is None else min(best, cost)
    assert _cost(plan_batches(lengths, options), lengths) == best


def test_pads_far_less_than_filling_each_batch_to_the_budget() -> None:
    import random

    rng = random.Random(0)
    lengths = sorted((min(max(int(rng.lognormvariate(5, 0.6)), 30), 500) for _ in range(100)), reverse=True)
    greedy: list[list[int]] = []
    current: list[int] = []  # the simple plan: fill each batch until the budget would be exceeded
    for i in range(len(lengths)):
        if current and (len(current) + 1) * lengths[current[0]] > 8192:
            greedy.append(current)
            current = []
        current.append(i)
    greedy.append(current)
    planned = plan_batches(lengths, BatchingOptions(max_batch_tokens=8192, max_batch_size=64))
    real = sum(lengths)
    assert real / sum(_padded(b, lengths) for b in planned) > 0.9
    assert sum(_padded(b, lengths) for b in planned) < 0.85 * sum(_padded(b, lengths) for b in greedy)


@pytest.mark.parametrize(
    ("seed", "options"),
    [
        (0, BatchingOptions()),
        (1, BatchingOptions(max_batch_tokens=32768, max_batch_size=512)),  # a GPU's batches
        (2, BatchingOptions(max_batch_tokens=300, max_batch_size=3)),
        (3, BatchingOptions(max_batch_tokens=4096, max_batch_size=1)),
        (4, BatchingOptions(max_batch_tokens=32768, max_batch_size=512, min_pass_tokens=3000)),  # a GPU's launches
        (5, BatchingOptions(max_batch_tokens=2048, max_batch_size=64, min_pass_tokens=2048)),
    ],
)
def test_least_cost_at_cpu_and_gpu_batch_sizes(seed: int, options: BatchingOptions) -> None:
    import random

    rng = random.Random(seed)
    # Runs of equal lengths (short pairs share a few lengths) mixed with spread ones and some over the budget.
    lengths = [
        rng.choice([rng.randint(8, 64), 40, 40, rng.randint(30, 600), rng.randint(1, 9000)]) for _ in range(1500)
    ]
    batches = plan_batches(lengths, options)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= options.max_batch_size
        assert _padded(batch, lengths) <= options.max_batch_tokens or len(batch) == 1
    assert batches == plain_plan(lengths, options)


def test_a_gpu_pads_rather_than_split_below_its_least_pass() -> None:
    """Pairs of 20-200 tokens: on CPU the planner splits them by length into five passes; where a pass costs
    at least 3,000 tokens' time (a GPU's kernel launches) it fills two passes up to that instead."""
    lengths = [20 + 9 * (i % 21) for i in range(36)]
    cpu = plan_batches(lengths, BatchingOptions(max_batch_tokens=32768, max_batch_size=512))
    gpu = plan_batches(lengths, BatchingOptions(max_batch_tokens=32768, max_batch_size=512, min_pass_tokens=3000))
    assert len(cpu) == 5
    assert [_padded(b, lengths) for b in gpu] == [3000, 2310]
    assert _cost(gpu, lengths, 3000) < _cost(cpu, lengths, 3000)


def test_a_negative_pass_price_is_refused() -> None:
    with pytest.raises(ConfigError, match="min_pass_tokens must be at least 0, got -1"):
        BatchingOptions(min_pass_tokens=-1)
    assert BatchingOptions(min_pass_tokens=0).min_pass_tokens == 0
