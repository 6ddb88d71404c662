"""Settings: the one place that reads ``CROSSRANK_*`` environment variables.

Doors (CLI, server) build a ``Settings`` once, let their flags override it, and pass plain values
down; nothing below them reads the environment.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from crossrank.config import DEFAULT_MODEL, Direction, Dtype, Fallback, LongQuery

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Defaults for every door, from ``CROSSRANK_<FIELD>`` (e.g. ``CROSSRANK_MODEL``, ``CROSSRANK_DEVICE``)."""

    model_config = SettingsConfigDict(env_prefix="CROSSRANK_", extra="ignore", frozen=True)

    model: str = DEFAULT_MODEL
    revision: str | None = None
    backend: str = "torch"
    device: str = "auto"
    dtype: Dtype = "auto"
    max_length: int = Field(default=512, ge=8)
    query_max_length: int | None = Field(default=None, ge=1)
    max_batch_tokens: int = Field(default=8192, ge=1)
    max_batch_size: int = Field(default=64, ge=1)
    num_threads: int | None = Field(default=None, ge=1)
    fallback: Fallback = "none"
    allow_pickle: bool = False
    trust_remote_code: bool = False
    cache_dir: str | None = None
    # Long documents (README "Long documents"); checked again by ChunkingOptions/TruncationOptions.
    aggregate: str = "max"
    chunk_tokens: int | None = Field(default=None, ge=1)
    overlap_tokens: int | None = Field(default=None, ge=0)
    max_chunks_per_doc: int = Field(default=64, ge=1)
    max_tokens_per_doc: int | None = Field(default=None, ge=1)
    truncation_direction: Direction = "right"
    truncate: bool = True
    long_query: LongQuery = "truncate"

    def reranker_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments for ``Reranker``; ``overrides`` that are ``None`` keep the setting."""
        values = self.model_dump()
        values.update({k: v for k, v in overrides.items() if v is not None})
        return values
