"""Batch planning: length-sorted batches under a padded-token budget (pure functions)."""

from __future__ import annotations

from collections.abc import Sequence

from crossrank.config import BatchingOptions

__all__ = ["plan_batches"]


# What one more forward pass costs, in padded tokens: the planner pads a batch by up to this much
# rather than split it (fixed per-pass work: kernel launches, Python, the classifier head).
PASS_COST_TOKENS = 128


def plan_batches(lengths: Sequence[int], options: BatchingOptions) -> list[list[int]]:
    """Group item indices into batches whose padded size stays within ``options``, padding least.

    Items are sorted longest first (so an out-of-memory batch shows up at once, not at the end)
    and cut into runs of neighbours; of all cuts with ``pairs * longest <= max_batch_tokens`` and
    ``pairs <= max_batch_size`` in every batch, the one with the fewest padded tokens (plus
    ``PASS_COST_TOKENS`` per batch) wins, found by dynamic programming. Padding is pure waste on
    CPU and most of the waste on GPU: a greedy fill of each batch to the budget pads short pairs
    to the longest. An item longer than the budget gets a batch of its own. Equal lengths keep
    their input order.

    >>> plan_batches([5, 100, 6, 100], BatchingOptions(max_batch_tokens=200, max_batch_size=8))
    [[1, 3], [2, 0]]
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    sizes = [lengths[i] for i in order]
    count = len(order)
    # cost[j]: least cost of batching the first j items; cut[j]: where the last of those batches starts.
    cost = [0] * (count + 1)
    cut = [0] * (count + 1)
    for end in range(1, count + 1):
        best, start_of_best = -1, end - 1
        for start in range(end - 1, max(end - options.max_batch_size, 0) - 1, -1):
            padded = (end - start) * sizes[start]  # sorted descending: the first item is the longest
            if padded > options.max_batch_tokens and end - start > 1:
                break  # starting earlier only makes the batch longer and wider
            total = cost[start] + padded + PASS_COST_TOKENS
            if best < 0 or total < best:
                best, start_of_best = total, start
        cost[end], cut[end] = best, start_of_best
    batches: list[list[int]] = []
    end = count
    while end > 0:
        batches.append(order[cut[end] : end])
        end = cut[end]
    batches.reverse()
    return batches
