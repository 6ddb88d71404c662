"""Settings: the one place that reads ``CROSSRANK_*`` environment variables.

Doors (CLI, server) build a ``Settings`` once, let their flags override it, and pass plain values
down; nothing below them reads the environment.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from crossrank.config import DEFAULT_MODEL, Direction, Dtype, Fallback, LongQuery, Quantize

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Defaults for every door, from ``CROSSRANK_<FIELD>`` (e.g. ``CROSSRANK_MODEL``, ``CROSSRANK_DEVICE``)."""

    model_config = SettingsConfigDict(env_prefix="CROSSRANK_", extra="ignore", frozen=True)

    model: str = DEFAULT_MODEL
    revision: str | None = None
    backend: str = "torch"
    device: str = "auto"
    dtype: Dtype = "auto"
    quantize: Quantize = "none"
    max_length: int = Field(default=512, ge=8)
    query_max_length: int | None = Field(default=None, ge=1)
    max_batch_tokens: int | None = Field(default=None, ge=1, description="None: 8192 on CPU, sized to GPU memory")
    max_batch_size: int | None = Field(default=None, ge=1, description="None: 64 on CPU, tokens / 64 (>= 64) on a GPU")
    num_threads: int | None = Field(default=None, ge=1)
    fallback: Fallback = "none"
    allow_pickle: bool = False
    trust_remote_code: bool = False
    cache_dir: str | None = None
    cache_size: int = Field(default=0, ge=0, description="in-process result cache entries (0: off)")
    cache_bytes: int = Field(default=256 * 2**20, ge=1)
    cache_url: str | None = Field(default=None, description="redis://... for a shared result cache")
    cache_ttl: int | None = Field(default=None, ge=1)
    cache_prefix: str = "crossrank:"

    # `crossrank serve`
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    api_key: str | None = Field(default=None, description="one key, or several separated by commas")
    served_model_name: str | None = None
    max_wait_ms: float = Field(default=5.0, ge=0)
    max_queue_pairs: int = Field(default=8192, ge=1)
    max_batch_requests: int | None = Field(default=None, ge=1)
    max_documents: int = Field(default=1000, ge=1)
    max_document_chars: int = Field(default=200_000, ge=1)
    max_query_chars: int = Field(default=20_000, ge=1)
    max_body_bytes: int = Field(default=20_000_000, ge=1)
    slow_ms: float = Field(default=200.0, ge=0)
    cors_origins: str | None = Field(default=None, description="allowed origins, separated by commas")
    graceful_timeout: float = Field(default=30.0, ge=0)

    # Celery (`crossrank worker`, crossrank.integrations.celery)
    celery_broker_url: str = "redis://127.0.0.1:6379/0"
    celery_result_backend: str = "redis://127.0.0.1:6379/1"
    celery_time_limit: int = Field(default=300, ge=1, description="seconds a rerank task may run (soft limit)")
    celery_visibility_timeout: int = Field(
        default=3600, ge=1, description="seconds before a dead worker's task is re-sent"
    )
    celery_result_expires: int = Field(default=86400, ge=1)
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
        values = self.model_dump(exclude=_DOOR_FIELDS)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return values


# Settings of the doors (`crossrank serve`, `crossrank worker`); every other field is a Reranker argument.
_DOOR_FIELDS = {
    "host",
    "port",
    "api_key",
    "served_model_name",
    "max_wait_ms",
    "max_queue_pairs",
    "max_batch_requests",
    "max_documents",
    "max_document_chars",
    "max_query_chars",
    "max_body_bytes",
    "slow_ms",
    "cors_origins",
    "graceful_timeout",
    "celery_broker_url",
    "celery_result_backend",
    "celery_time_limit",
    "celery_visibility_timeout",
    "celery_result_expires",
}
