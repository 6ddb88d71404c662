"""Option value objects: frozen, validated on creation, never read from the environment.

``settings.py`` turns ``CROSSRANK_*`` variables into these; the library takes them as arguments.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from crossrank.errors import ConfigError

__all__ = [
    "DEFAULT_MODEL",
    "TOKENIZER_INPUTS",
    "Aggregation",
    "BatchingOptions",
    "CacheOptions",
    "ChunkingOptions",
    "Direction",
    "Dtype",
    "Fallback",
    "LongQuery",
    "ModelSpec",
    "Quantize",
    "RuntimeOptions",
    "TruncationOptions",
    "cache_folder",
]

DEFAULT_MODEL = "BAAI/bge-reranker-v2-m3"

# The files of a model folder that a Hugging Face tokenizer may read (besides config.json): downloads fetch them,
# and a saved tokenizer is built again when any of them changes.
TOKENIZER_INPUTS = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "sentencepiece.bpe.model",
    "spiece.model",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
)

Dtype = Literal["auto", "float32", "float16", "bfloat16"]
Fallback = Literal["none", "cpu"]
Quantize = Literal["none", "int8"]
Direction = Literal["right", "left"]
LongQuery = Literal["truncate", "reject"]
AggregationKind = Literal["max", "mean", "first", "topk_mean"]
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelSpec:
    """Which model to load and how far to trust it.

    Attributes:
        name_or_path: a local folder or a Hugging Face hub id.
        revision: hub branch, tag or commit (ignored for local folders).
        cache_dir: hub cache folder; ``None`` keeps huggingface_hub's own (``HF_HOME``/``HF_HUB_CACHE``).
        allow_pickle: also load ``pytorch_model.bin`` weights. Pickle can run code: only for sources you trust.
        trust_remote_code: run Python code shipped with the model. Off unless you have read that code.
    """

    name_or_path: str = DEFAULT_MODEL
    revision: str | None = None
    cache_dir: str | None = None
    allow_pickle: bool = False
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if not self.name_or_path.strip():
            raise ConfigError(
                "model name or path is empty", fix="pass a hub id such as BAAI/bge-reranker-v2-m3 or a folder"
            )


@dataclass(frozen=True, kw_only=True, slots=True)
class RuntimeOptions:
    """Where and in which precision the model runs.

    Attributes:
        device: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
            ``CUDA_VISIBLE_DEVICES`` decides which physical GPUs ``cuda:N`` can name.
        dtype: ``auto`` (float16 on GPU; on CPU float32, with bfloat16 autocast where the CPU has AMX),
            ``float32``, ``float16`` or ``bfloat16``. Scores are always computed in float32 after the
            model, whatever this is. Pass ``float32`` for scores that match float32 references to 1e-4.
        num_threads: CPU threads for the runtime (process-wide in torch); ``None`` keeps its default.
        fallback: ``cpu`` scores a pair on the CPU when even that single pair does not fit in GPU
            memory (with a warning); ``none`` raises ``DeviceMemoryError`` instead.
        quantize: ``int8`` runs int8 weights (ONNX backend, CPU); ``none`` keeps ``dtype``.
    """

    device: str = "auto"
    dtype: Dtype = "auto"
    num_threads: int | None = None
    fallback: Fallback = "none"
    quantize: Quantize = "none"

    def __post_init__(self) -> None:
        if not _DEVICE.match(self.device):
            raise ConfigError(
                f"device {self.device!r} is not one of auto, cpu, cuda, cuda:N",
                fix="pass device='auto', 'cpu', 'cuda' or 'cuda:0'",
            )
        if self.dtype not in get_args(Dtype):
            raise ConfigError(
                f"dtype {self.dtype!r} is not one of {', '.join(get_args(Dtype))}",
                fix="pass dtype='auto', 'float32', 'float16' or 'bfloat16'",
            )
        if self.fallback not in get_args(Fallback):
            raise ConfigError(
                f"fallback {self.fallback!r} is not one of none, cpu", fix="pass fallback='cpu' or 'none'"
            )
        if self.num_threads is not None and self.num_threads < 1:
            raise ConfigError(f"num_threads must be at least 1, got {self.num_threads}")
        _check_choice("quantize", self.quantize, Quantize)


@dataclass(frozen=True, kw_only=True, slots=True)
class BatchingOptions:
    """How pairs are grouped for the model.

    Pairs are sorted by length and cut into batches whose padded size (pairs x longest pair)
    stays within ``max_batch_tokens``, so short pairs travel in big batches and long ones in
    small batches, and padding stays small.

    Attributes:
        max_batch_tokens: padded tokens per forward pass (a single longer pair still runs alone).
        max_batch_size: pairs per forward pass at most.
        min_pass_tokens: the least a forward pass costs, in padded tokens, however few it holds. On a GPU a
            small pass waits on its kernel launches rather than on arithmetic, so the torch backend measures
            it there (its one-pair pass's time at its full pass's tokens per second); 0 on CPU, where a pass
            costs what it computes.
    """

    max_batch_tokens: int = 8192
    max_batch_size: int = 64
    min_pass_tokens: int = 0

    def __post_init__(self) -> None:
        if self.max_batch_tokens < 1:
            raise ConfigError(f"max_batch_tokens must be at least 1, got {self.max_batch_tokens}")
        if self.max_batch_size < 1:
            raise ConfigError(f"max_batch_size must be at least 1, got {self.max_batch_size}")
        if self.min_pass_tokens < 0:
            raise ConfigError(f"min_pass_tokens must be at least 0, got {self.min_pass_tokens}")


@dataclass(frozen=True, kw_only=True, slots=True)
class TruncationOptions:
    """How long pairs are cut (FlagEmbedding's policy) and when cutting is refused instead.

    The query alone is cut to ``query_max_length`` tokens; then only the document is cut (or split
    into windows, see ``ChunkingOptions``) so that ``<special> query <special> document <special>``
    fits in ``max_length`` tokens. The query therefore never loses tokens to a long document.

    Attributes:
        max_length: tokens per pair, special tokens included; 512 is the upstream recommendation for
            bge-reranker-v2-m3 (it reads up to 8192).
        query_max_length: the query's cap; ``None`` means ``max_length * 3 // 4`` like FlagEmbedding.
        direction: which end a cut keeps: ``right`` drops the end of a text (keeps its start),
            ``left`` drops its start (TEI's ``truncation_direction``).
        max_tokens_per_doc: a document is cut to this many tokens before it is split into windows
            (Cohere's ``max_tokens_per_doc``); ``None``: no cap besides ``max_chunks_per_doc``.
        truncate: ``False`` refuses to drop any token: a query over its cap, a document over
            ``max_tokens_per_doc`` or needing more windows than allowed raise ``InputTooLongError``
            (TEI's ``truncate=false``) instead of being cut.
        long_query: ``truncate`` cuts a query over its cap (counted in ``Usage.truncated_queries``;
            ``Reranker`` also warns); ``reject`` raises ``InputTooLongError``.
    """

    max_length: int = 512
    query_max_length: int | None = None
    direction: Direction = "right"
    max_tokens_per_doc: int | None = None
    truncate: bool = True
    long_query: LongQuery = "truncate"

    def __post_init__(self) -> None:
        if self.max_length < 8:
            raise ConfigError(f"max_length must be at least 8 tokens, got {self.max_length}")
        if self.query_max_length is not None and not 1 <= self.query_max_length < self.max_length:
            raise ConfigError(
                f"query_max_length must be between 1 and max_length - 1 ({self.max_length - 1}), "
                f"got {self.query_max_length}"
            )
        _check_choice("truncation_direction", self.direction, Direction)
        _check_choice("long_query", self.long_query, LongQuery)
        if self.max_tokens_per_doc is not None and self.max_tokens_per_doc < 1:
            raise ConfigError(f"max_tokens_per_doc must be at least 1, got {self.max_tokens_per_doc}")

    @property
    def query_cap(self) -> int:
        """The query's token cap actually applied."""
        return self.query_max_length if self.query_max_length is not None else self.max_length * 3 // 4


@dataclass(frozen=True, kw_only=True, slots=True)
class CacheOptions:
    """The result cache: repeated (query, document) pairs are answered without the model.

    Attributes:
        size: entries kept in this process (least recently used go first); 0 turns the in-process cache off.
        max_bytes: approximate memory the in-process entries may take.
        url: ``redis://host:port/db`` to share one cache between processes and replicas (instead of in-process).
        ttl: seconds a Redis entry lives (``None``: until Redis evicts it).
        prefix: prefix of every Redis key, to share a Redis with other data.
        timeout: seconds to wait for Redis before computing instead.
    """

    size: int = 0
    max_bytes: int = 256 * 2**20
    url: str | None = None
    ttl: int | None = None
    prefix: str = "crossrank:"
    timeout: float = 0.25

    def __post_init__(self) -> None:
        if self.size < 0 or self.max_bytes < 1:
            raise ConfigError(f"cache size must be >= 0 entries and max_bytes >= 1, got {self.size}, {self.max_bytes}")
        if self.url is not None and not self.url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(
                f"cache url {self.url!r} is not a Redis URL", fix="use redis://host:6379/0 (or rediss:// for TLS)"
            )
        if self.ttl is not None and self.ttl < 1:
            raise ConfigError(f"cache ttl must be at least 1 second, got {self.ttl}")
        if self.timeout <= 0:
            raise ConfigError(f"cache timeout must be positive, got {self.timeout}")

    @property
    def enabled(self) -> bool:
        """Whether any cache is configured."""
        return self.size > 0 or self.url is not None


@dataclass(frozen=True, slots=True)
class Aggregation:
    """How the scores of a document's windows become its score.

    ``max`` (the best window), ``mean`` (all windows), ``first`` (only the first window is scored:
    plain truncation) or ``topk_mean`` (mean of the ``k`` best windows; ``topk_mean:3`` as text).
    """

    kind: AggregationKind
    k: int = 1

    @classmethod
    def parse(cls, text: str) -> Aggregation:
        """``max``, ``mean``, ``first`` or ``topk_mean:K`` (K >= 1) to an ``Aggregation``."""
        name, _, k = text.strip().partition(":")
        if name == "topk_mean" and k.isdigit() and int(k) >= 1:
            return cls("topk_mean", int(k))
        if not k and name in ("max", "mean", "first"):
            return cls(name)  # type: ignore[arg-type]  # checked just above
        raise ConfigError(
            f"aggregate {text!r} is not one of max, mean, first, topk_mean:K",
            fix="pass aggregate='max', 'mean', 'first' or e.g. 'topk_mean:3'",
        )

    def __str__(self) -> str:
        return f"topk_mean:{self.k}" if self.kind == "topk_mean" else self.kind


@dataclass(frozen=True, kw_only=True, slots=True)
class ChunkingOptions:
    """How a document longer than its window is split into overlapping windows and scored.

    A document whose tokens fit beside the query is read whole, as one pair, whatever these say
    (its score is exactly the unchunked one). A longer one is split into windows of ``chunk_tokens``
    tokens that overlap by ``overlap_tokens``; each window is scored as a (query, window) pair in
    the same batches as every other pair, and the window scores are aggregated. The last window is
    moved back so it is full length (it may then overlap its neighbour by more).

    Attributes:
        aggregate: ``max`` (default), ``mean``, ``first`` (= plain truncation) or ``topk_mean:K``.
        chunk_tokens: document tokens per window; ``None`` (or more than fits) means all the room
            that ``max_length`` leaves after the query and special tokens.
        overlap_tokens: tokens shared by neighbouring windows; ``None`` means 1/8 of the window.
            Never more than half the window, so each window moves on.
        max_chunks_per_doc: windows per document at most, so one huge document cannot starve the
            others. The text beyond them is dropped (counted as truncated), or raises
            ``InputTooLongError`` with ``TruncationOptions(truncate=False)``.
    """

    aggregate: str = "max"
    chunk_tokens: int | None = None
    overlap_tokens: int | None = None
    max_chunks_per_doc: int = 64

    def __post_init__(self) -> None:
        Aggregation.parse(self.aggregate)
        if self.chunk_tokens is not None and self.chunk_tokens < 1:
            raise ConfigError(f"chunk_tokens must be at least 1, got {self.chunk_tokens}")
        if self.overlap_tokens is not None and self.overlap_tokens < 0:
            raise ConfigError(f"overlap_tokens must be at least 0, got {self.overlap_tokens}")
        if (
            self.chunk_tokens is not None
            and self.overlap_tokens is not None
            and self.overlap_tokens > self.chunk_tokens // 2
        ):
            raise ConfigError(
                f"overlap_tokens ({self.overlap_tokens}) must be at most half of chunk_tokens ({self.chunk_tokens})"
            )
        if self.max_chunks_per_doc < 1:
            raise ConfigError(f"max_chunks_per_doc must be at least 1, got {self.max_chunks_per_doc}")

    @property
    def aggregation(self) -> Aggregation:
        """``aggregate`` parsed."""
        return Aggregation.parse(self.aggregate)

    def window(self, room: int) -> tuple[int, int]:
        """Window size and overlap in tokens, given the ``room`` a pair leaves for the document."""
        size = room if self.chunk_tokens is None else min(self.chunk_tokens, room)
        overlap = size // 8 if self.overlap_tokens is None else self.overlap_tokens
        return size, min(overlap, size // 2)


def cache_folder(name: str) -> Path:
    """``~/.cache/crossrank/<name>``: what crossrank builds for itself (tokenizers, ONNX exports of models in
    read-only folders, the m3-shaped model). Raises ``RuntimeError`` where there is no home folder."""
    return Path.home() / ".cache" / "crossrank" / name


def _check_choice(name: str, value: str, choices: object) -> None:
    allowed = get_args(choices)
    if value not in allowed:
        raise ConfigError(f"{name} {value!r} is not one of {', '.join(allowed)}", fix=f"pass {name}={allowed[0]!r}")
