"""Batch planning: length-sorted batches under a padded-token budget (pure functions)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from crossrank.config import BatchingOptions

__all__ = ["plan_batches"]


# What one more forward pass costs beyond its tokens, in padded tokens (measured on CPU): the planner
# pads a batch by up to this much rather than split it (per-pass work: Python, the classifier head).
PASS_COST_TOKENS = 128


def plan_batches(lengths: Sequence[int], options: BatchingOptions) -> list[list[int]]:
    """Group item indices into batches whose padded size stays within ``options``, padding least.

    Items are sorted longest first (so an out-of-memory batch shows up at once, not at the end)
    and cut into runs of neighbours; of all cuts with ``pairs * longest <= max_batch_tokens`` and
    ``pairs <= max_batch_size`` in every batch, the cheapest wins, found by dynamic programming: a
    batch costs its padded tokens, at least ``min_pass_tokens`` (a GPU's small pass costs its kernel
    launches whatever it holds), plus ``PASS_COST_TOKENS``. Padding is pure waste on CPU and most
    of the waste on GPU: a greedy fill of each batch to the budget pads short pairs to the longest.
    An item longer than the budget gets a batch of its own. Equal lengths keep their input order.

    >>> plan_batches([5, 100, 6, 100], BatchingOptions(max_batch_tokens=200, max_batch_size=8))
    [[1, 3], [2, 0]]
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    count = len(order)
    sizes = [lengths[i] for i in order]
    longest = np.array(sizes, dtype=np.int64)  # of a batch that starts at each position (sorted descending)
    positions = np.arange(count, dtype=np.int64)
    # cost[j]: least cost of batching the first j items; cut[j]: where the last of those batches starts.
    cost = np.zeros(count + 1, dtype=np.int64)
    cut = [0] * (count + 1)
    first = 0  # the earliest start of a batch ending at `end`: it only moves right as `end` does
    for end in range(1, count + 1):
        first = max(first, end - options.max_batch_size)
        while end - first > 1 and (end - first) * sizes[first] > options.max_batch_tokens:
            first += 1
        # Every start's total at once: a Python loop over up to max_batch_size starts per item cost
        # 0.2 s per 4,096 pairs at GPU batch sizes, serial CPU time while the GPU waits.
        padded = (end - positions[first:end]) * longest[first:end]
        totals = cost[first:end] + np.maximum(padded, options.min_pass_tokens)
        latest_best = int(np.argmin(totals[::-1]))  # equal totals: the latest start, the shortest last batch
        cost[end] = totals[-1 - latest_best] + PASS_COST_TOKENS
        cut[end] = end - 1 - latest_best
    batches: list[list[int]] = []
    end = count
    while end > 0:
        batches.append(order[cut[end] : end])
        end = cut[end]
    batches.reverse()
    return batches
