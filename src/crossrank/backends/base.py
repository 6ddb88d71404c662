"""The contract between the engine and any runtime: token-id batches in, float32 logits out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from crossrank.config import BatchingOptions

__all__ = ["Backend", "EncodedBatch", "TokenHead", "WrappedBackend"]


@dataclass(frozen=True, slots=True)
class EncodedBatch:
    """A padded batch of (query, document) pairs as the model reads them.

    Attributes:
        input_ids: int64 ``[batch, length]``, right-padded.
        attention_mask: int64 ``[batch, length]``, 1 on real tokens.
        token_type_ids: int64 ``[batch, length]`` for models that read segment ids (BERT), else ``None``.
        shared_prefix: int64 ``[batch]``, for a decoder reranker: how many leading ids each row shares with
            every other row of its query (prompt, instruction, query), which a backend may compute once.
    """

    input_ids: npt.NDArray[np.int64]
    attention_mask: npt.NDArray[np.int64]
    token_type_ids: npt.NDArray[np.int64] | None = None
    shared_prefix: npt.NDArray[np.int64] | None = None

    @property
    def size(self) -> int:
        """Pairs in the batch."""
        return int(self.input_ids.shape[0])

    def computed_tokens(self, pairs_alone: bool) -> int:
        """Tokens a forward pass computes: every padded position, or only the real ones where each pair runs alone."""
        return int(self.attention_mask.sum()) if pairs_alone else int(self.input_ids.size)


@dataclass(frozen=True, slots=True)
class TokenHead:
    """Where a decoder reranker's logit is read, at the last real position of each row (``crossrank.families``'
    ``ScoreHead`` with the tokenizer's ids): token ``positive``'s logit, minus token ``negative``'s where given;
    with ``layer``, a layer-wise model's own head at that cutoff layer (``None``: its last layer)."""

    positive: int
    negative: int | None = None
    layer: int | None = None


@runtime_checkable
class Backend(Protocol):
    """A loaded model that turns an :class:`EncodedBatch` into one float32 logit per pair.

    Implementations own the device and the precision; they must return float32 whatever they
    compute in, so the engine's activation and ranking never see half precision. ``batching`` is
    the batch size that suits the backend on its device, used where the user sets none.
    ``runs_pairs_alone`` says that ``forward`` runs each pair without its batch's padding, so it
    computes no padding (``crossrank bench`` counts computed tokens by it).
    """

    name: str
    device: str
    dtype: str
    batching: BatchingOptions
    runs_pairs_alone: bool

    def forward(self, batch: EncodedBatch) -> npt.NDArray[np.float32]:
        """Score a batch; returns shape ``[batch.size]``."""
        ...

    def close(self) -> None:
        """Release the model and its device memory."""
        ...


class WrappedBackend:
    """Another backend with the same attributes, passing every call to it: subclasses change ``forward``."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name, self.device, self.dtype = inner.name, inner.device, inner.dtype
        self.batching, self.runs_pairs_alone = inner.batching, inner.runs_pairs_alone

    def forward(self, batch: EncodedBatch) -> npt.NDArray[np.float32]:
        return self.inner.forward(batch)

    def close(self) -> None:
        self.inner.close()
