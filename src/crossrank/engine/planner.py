"""Batch planning: length-sorted batches under a padded-token budget (pure functions)."""

from __future__ import annotations

from collections.abc import Sequence

from crossrank.config import BatchingOptions

__all__ = ["plan_batches"]


def plan_batches(lengths: Sequence[int], options: BatchingOptions) -> list[list[int]]:
    """Group item indices into batches whose padded size stays within ``options``.

    Items are taken longest first (so an out-of-memory batch shows up at once, not at the end),
    and each batch grows while ``pairs * longest <= max_batch_tokens`` and ``pairs <=
    max_batch_size``. An item longer than the budget gets a batch of its own. Equal lengths
    keep their input order.

    >>> plan_batches([5, 100, 6, 100], BatchingOptions(max_batch_tokens=200, max_batch_size=8))
    [[1, 3], [2, 0]]
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        # Sorted descending, so the batch's first item is its longest.
        longest = lengths[current[0]] if current else lengths[index]
        if current and (
            len(current) >= options.max_batch_size or (len(current) + 1) * longest > options.max_batch_tokens
        ):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches
