"""Settings: the one place that reads ``CROSSRANK_*`` environment variables.

Doors (CLI, server) build a ``Settings`` once, let their flags override it, and pass plain values
down; nothing below them reads the environment.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from crossrank.config import DEFAULT_MODEL, Direction, Dtype, Fallback, LongQuery, Quantize, RerankerOptions
from crossrank.errors import ConfigError
from crossrank.families import check_family_name

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Defaults for every door, from ``CROSSRANK_<FIELD>`` (e.g. ``CROSSRANK_MODEL``, ``CROSSRANK_DEVICE``)."""

    model_config = SettingsConfigDict(env_prefix="CROSSRANK_", extra="ignore", frozen=True)

    # The reranker's options (config.flat_option_names: the same names as Reranker's keywords). Each
    # description is also the help of the CLI flag of that name (cli/_common.py builds the flags from them).
    model: str = Field(default=DEFAULT_MODEL, description="Hub id or local folder.")
    revision: str | None = Field(default=None, description="Hub branch, tag or commit.")
    backend: str = Field(default="torch", description="torch, or onnx (onnxruntime; exported on first use).")
    device: str = Field(default="auto", description="auto, cpu, cuda or cuda:N.")
    dtype: Dtype = Field(
        default="auto",
        description="auto, float32, float16 or bfloat16 (auto on CPU: the mode measured fastest on this machine; "
        "with --backend onnx, float32 or int8).",
    )
    quantize: Quantize = Field(
        default="none", description="none, or int8 (with --backend onnx, CPU; forced, not measured)."
    )
    max_length: int = Field(default=512, ge=8, description="Tokens per pair, special tokens included.")
    query_max_length: int | None = Field(default=None, ge=1, description="The query's cap [3/4 of max-length].")
    max_batch_tokens: int | None = Field(
        default=None,
        ge=1,
        description="Padded tokens per forward pass [8192 on CPU; on a GPU, what free memory holds].",
    )
    max_batch_size: int | None = Field(
        default=None, ge=1, description="Pairs per forward pass [64 on CPU; on a GPU, token budget / 64, >= 64]."
    )
    num_threads: int | None = Field(default=None, ge=1, description="CPU threads [the runtime's default].")
    fallback: Fallback = Field(default="none", description="cpu: score a pair on CPU when it alone overflows the GPU.")
    allow_pickle: bool = Field(default=False, description="Also load pytorch_model.bin (pickle can run code).")
    trust_remote_code: bool = Field(default=False, description="Run code shipped with the model.")
    cache_dir: str | None = Field(default=None, description="Hub cache folder [huggingface_hub's].")
    cache_size: int = Field(default=0, ge=0, description="In-process result cache entries (0: off).")
    cache_bytes: int = Field(default=256 * 2**20, ge=1, description="Memory the in-process cache may take.")
    cache_url: str | None = Field(default=None, description="redis://host:port/db: a result cache shared by replicas.")
    cache_ttl: int | None = Field(default=None, ge=1, description="Seconds a Redis cache entry lives.")
    cache_prefix: str = Field(default="crossrank:", description="Prefix of the Redis cache keys.")
    cache_timeout: float = Field(default=0.25, gt=0, description="Seconds to wait for Redis before scoring instead.")
    aggregate: str = Field(default="max", description="Long documents: max, mean, first (= truncate) or topk_mean:K.")
    chunk_tokens: int | None = Field(default=None, ge=1, description="Document tokens per window [all that fit].")
    overlap_tokens: int | None = Field(default=None, ge=0, description="Tokens neighbouring windows share [1/8].")
    max_chunks_per_doc: int = Field(default=64, ge=1, description="Windows per long document at most; the rest is cut.")
    max_tokens_per_doc: int | None = Field(default=None, ge=1, description="Cut each document to this many tokens.")
    truncation_direction: Direction = Field(default="right", description="right cuts a text's end, left its start.")
    truncate: bool = Field(default=True, description="Cut over-long texts (--no-truncate refuses them instead).")
    long_query: LongQuery = Field(default="truncate", description="truncate or reject a query over its cap.")
    family: str = Field(
        default="auto",
        description="How the model is scored: auto (detected from config.json and name), cross-encoder, "
        "qwen3-reranker, bge-reranker-gemma, bge-reranker-minicpm-layerwise or mxbai-rerank-v2.",
    )
    instruction: str | None = Field(
        default=None, description="A decoder (LLM) reranker's task instruction [its family's default]."
    )

    @field_validator("family")
    @classmethod
    def _known_family(cls, value: str) -> str:
        """An unknown family is a bad flag of every door (verify and doctor too), before anything loads."""
        try:
            check_family_name(value)
        except ConfigError as exc:
            raise ValueError(exc.message) from None
        return value

    cutoff_layer: int | None = Field(
        default=None,
        ge=0,
        description="A layer-wise reranker's (bge-reranker-v2-minicpm-layerwise) layer that scores [its last].",
    )

    # `crossrank serve`
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    api_key: str | None = Field(default=None, description="one key, or several separated by commas")
    served_model_name: str | None = None
    max_wait_ms: float = Field(default=5.0, ge=0)
    max_queue_pairs: int = Field(default=8192, ge=1, description="queued windows (query-chunk pairs) at most")
    max_queue_tokens: int | None = Field(default=None, ge=1, description="None: 8 x the request cap")
    max_request_tokens: int | None = Field(
        default=None, ge=1, description="None: the model's tokens/s measured at start x 5 s (README, Limits)"
    )
    max_batch_requests: int | None = Field(default=None, ge=1)
    max_documents: int = Field(default=1000, ge=1)
    max_document_chars: int = Field(default=200_000, ge=1)
    max_query_chars: int = Field(default=20_000, ge=1)
    max_body_bytes: int = Field(default=20_000_000, ge=1)
    slow_ms: float = Field(default=200.0, ge=0)
    cors_origins: str | None = Field(default=None, description="allowed origins, separated by commas")
    graceful_timeout: float = Field(default=30.0, ge=0)
    max_connections: int = Field(default=1000, ge=1, description="open connections or requests at most (503 beyond)")
    keep_alive_timeout: int = Field(default=5, ge=1, description="seconds an idle kept-alive connection stays open")
    header_timeout: float = Field(default=10.0, gt=0, description="seconds to receive a request's headers")
    body_timeout: float = Field(default=30.0, gt=0, description="seconds a request body may pause between chunks")
    ui: bool = Field(default=True, description="Serve the /ui playground page (--no-ui: 404).")

    # Celery (`crossrank worker`, crossrank.integrations.celery)
    celery_broker_url: str = "redis://127.0.0.1:6379/0"
    celery_result_backend: str = "redis://127.0.0.1:6379/1"
    celery_time_limit: int = Field(default=300, ge=1, description="seconds a rerank task may run (soft limit)")
    celery_visibility_timeout: int | None = Field(
        default=None, ge=1, description="seconds before a dead worker's task is re-sent (None: derived, see celery.py)"
    )
    celery_result_expires: int = Field(default=86400, ge=1)

    def with_flags(self, **flags: Any) -> Settings:
        """These settings with a command's flags on top (``None``: not given), validated as the variables are."""
        given = {name: value for name, value in flags.items() if value is not None}
        return self.model_validate({**self.model_dump(), **given}) if given else self

    def reranker_options(self) -> RerankerOptions:
        """The ``Reranker`` these settings describe, as its typed options."""
        return RerankerOptions.from_flat(**self.model_dump(exclude=_DOOR_FIELDS))


# Settings of the doors (`crossrank serve`, `crossrank worker`); every other field is a Reranker argument.
_DOOR_FIELDS = {
    "host",
    "port",
    "api_key",
    "served_model_name",
    "max_wait_ms",
    "max_queue_pairs",
    "max_queue_tokens",
    "max_request_tokens",
    "max_batch_requests",
    "max_documents",
    "max_document_chars",
    "max_query_chars",
    "max_body_bytes",
    "slow_ms",
    "cors_origins",
    "graceful_timeout",
    "max_connections",
    "keep_alive_timeout",
    "header_timeout",
    "body_timeout",
    "ui",
    "celery_broker_url",
    "celery_result_backend",
    "celery_time_limit",
    "celery_visibility_timeout",
    "celery_result_expires",
}
