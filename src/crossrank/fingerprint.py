"""The fingerprint: what a score depends on besides its two texts, in one canonical form.

A loaded model's identity (``crossrank.loader``: the digest of its files, hub commit, backend, precision) plus every
score-changing option of a request, by its flat name. Everything that reuses a score keys on it: the result
cache, ``crossrank batch`` resume, the ONNX export folder (its model half) and ``/info``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from crossrank.config import ChunkingOptions, PromptOptions, TruncationOptions

__all__ = ["Fingerprint", "score_options"]


def score_options(truncation: TruncationOptions, chunking: ChunkingOptions, prompt: PromptOptions) -> dict[str, Any]:
    """The one serialisation of the per-request options that change a score, by their flat names (JSON-ready).

    The instruction appears only when there is one (a decoder family's), so a cross-encoder's fingerprint is the
    same as before instructions existed."""
    values = {**dataclasses.asdict(truncation), **dataclasses.asdict(chunking)}
    return values if prompt.instruction is None else {**values, "instruction": prompt.instruction}


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """What a score depends on besides its two texts; equal fingerprints give equal scores.

    ``values`` are the model's identity (a digest of its files, its hub commit, the backend and the precision it
    runs in) and every score-changing option by its flat name; ``digest`` is their canonical hash. The result
    cache keys on it, ``crossrank batch`` refuses to resume under another, ``/info`` shows it.
    """

    values: dict[str, Any]

    @classmethod
    def of(
        cls, identity: dict[str, Any], truncation: TruncationOptions, chunking: ChunkingOptions, prompt: PromptOptions
    ) -> Fingerprint:
        """A loaded model's identity with the options of a request."""
        return cls({**identity, **score_options(truncation, chunking, prompt)})

    @property
    def digest(self) -> str:
        """sha256 (hex) of the canonical JSON of ``values``."""
        return hashlib.sha256(json.dumps(self.values, sort_keys=True).encode()).hexdigest()

    def differences(self, other: Fingerprint) -> list[str]:
        """The names whose values differ between the two (sorted)."""
        names = self.values.keys() | other.values.keys()
        return sorted(name for name in names if self.values.get(name) != other.values.get(name))
