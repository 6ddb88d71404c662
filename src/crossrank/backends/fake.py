"""FakeBackend: deterministic scores from token ids, for tests, docs and ``--backend fake``.

A pair's logit depends on its own query and document ids only, never on the rest of its batch or on
padding: ``6 * overlap - 3`` plus a jitter below 0.1, where ``overlap`` is the share of the query's
distinct tokens that the document contains, so documents sharing words with the query rank first. The
jitter is a checksum of the pair's ids: ties break the same way in every process and on every run.

Example:
    >>> import numpy as np
    >>> from crossrank.backends.base import EncodedBatch
    >>> ids = np.array([[0, 7, 8, 2, 2, 7, 8, 2], [0, 7, 8, 2, 2, 9, 2, 1]])  # <s> q </s></s> d </s> <pad>
    >>> mask = (np.arange(8) < np.array([[8], [7]])).astype(np.int64)
    >>> logits = FakeBackend(latency=0.001).forward(EncodedBatch(ids, mask))
    >>> bool(logits[0] > logits[1])
    True
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Collection
from pathlib import Path

import numpy as np
import numpy.typing as npt

from crossrank.backends.base import EncodedBatch
from crossrank.config import BatchingOptions, RuntimeOptions
from crossrank.errors import InferenceError

__all__ = ["FakeBackend"]

_JITTER = 0.1


def _split(row: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The query and document ids of one unpadded pair.

    Both families' templates end each segment with the separator that ends the pair (BERT
    ``[CLS] q [SEP] d [SEP]``, XLM-R ``<s> q </s></s> d </s>``); a row without a second segment is all document.
    """
    body, separator = row[1:-1], row[-1:]
    cuts = np.flatnonzero(body == separator)
    if cuts.size == 0:
        return body[:0], body
    query, rest = body[: cuts[0]], body[cuts[0] :]
    starts = np.flatnonzero(rest != separator)
    return query, rest[starts[0] :] if starts.size else rest[:0]


def _logit(row: npt.NDArray[np.int64]) -> float:
    query, document = _split(row)
    distinct = set(query.tolist())
    overlap = len(distinct.intersection(document.tolist())) / len(distinct) if distinct else 0.0
    checksum = zlib.crc32(np.ascontiguousarray(row, dtype="<i8").tobytes())
    return 6.0 * overlap - 3.0 + _JITTER * checksum / 2**32


class FakeBackend:
    """A backend that computes no model: token-overlap scores, with latency and failures on demand.

    Args:
        model_dir: ignored (the loader has already checked the folder); accepted for the registry.
        latency: seconds every forward pass sleeps, as a model's fixed cost per pass.
        latency_per_token: seconds added per computed (padded) token, so longer batches take longer.
        fail_calls: the forward calls (1 for the first) that raise ``InferenceError``.
        fail_all: every forward call raises ``InferenceError``.

    Unknown keyword arguments (the registry's ``runtime``, ``allow_pickle`` and any later ones) are ignored.
    The counters ``calls``, ``pairs`` and ``tokens`` (real, unpadded) and ``batch_sizes`` cover every call
    the backend saw, failed ones included.
    """

    name = "fake"
    device = "cpu"
    dtype = "float32"
    runs_pairs_alone = False

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        runtime: RuntimeOptions | None = None,
        latency: float = 0.0,
        latency_per_token: float = 0.0,
        fail_calls: Collection[int] = (),
        fail_all: bool = False,
        **_: object,
    ) -> None:
        del model_dir, runtime  # the fake reads no weights and has one device
        self.batching = BatchingOptions()
        self.latency = latency
        self.latency_per_token = latency_per_token
        self.fail_calls = frozenset(fail_calls)
        self.fail_all = fail_all
        self.calls = 0
        self.pairs = 0
        self.tokens = 0
        self.batch_sizes: list[int] = []
        self.closed = False
        # The micro-batcher's worker thread and direct callers may run passes at once.
        self._lock = threading.Lock()

    def forward(self, batch: EncodedBatch) -> npt.NDArray[np.float32]:
        lengths = batch.attention_mask.sum(axis=1)
        with self._lock:
            self.calls += 1
            call = self.calls
            self.pairs += batch.size
            self.tokens += int(lengths.sum())
            self.batch_sizes.append(batch.size)
        pause = self.latency + self.latency_per_token * batch.computed_tokens(self.runs_pairs_alone)
        if pause > 0:
            time.sleep(pause)
        if self.fail_all or call in self.fail_calls:
            raise InferenceError(f"fake backend: failure injected on forward call {call}")
        rows = (ids[:length] for ids, length in zip(batch.input_ids, lengths.tolist(), strict=True))
        return np.array([_logit(row) for row in rows], dtype=np.float32)

    def close(self) -> None:
        self.closed = True
