"""ObservedBackend: a backend that reports every forward pass (pairs, tokens computed and real, time) for metrics."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from crossrank.backends.base import Backend, EncodedBatch, WrappedBackend

__all__ = ["BatchStats", "ObservedBackend"]


@dataclass(frozen=True, slots=True)
class BatchStats:
    """One forward pass, for metrics: pairs, tokens computed (padding included) and real, and its wall time."""

    pairs: int
    padded_tokens: int
    tokens: int
    seconds: float


class ObservedBackend(WrappedBackend):
    """A backend that reports every forward pass to ``observe`` (metrics), otherwise the wrapped one."""

    def __init__(self, inner: Backend, observe: Callable[[BatchStats], None]) -> None:
        super().__init__(inner)
        self._observe = observe

    def forward(self, batch: EncodedBatch) -> npt.NDArray[np.float32]:
        started = time.perf_counter()
        scores = self.inner.forward(batch)
        self._observe(
            BatchStats(
                pairs=batch.size,
                padded_tokens=batch.computed_tokens(self.runs_pairs_alone),
                tokens=int(batch.attention_mask.sum()),
                seconds=time.perf_counter() - started,
            )
        )
        return scores
