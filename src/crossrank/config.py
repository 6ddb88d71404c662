"""Option value objects: frozen, validated on creation, never read from the environment.

``settings.py`` turns ``CROSSRANK_*`` variables into these; the library takes them as arguments.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Literal, get_args

from crossrank.errors import ConfigError
from crossrank.families import AUTO, check_family_name

__all__ = [
    "DEFAULT_MODEL",
    "MAX_INSTRUCTION_CHARS",
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
    "PromptOptions",
    "Quantize",
    "RerankOptions",
    "RerankerOptions",
    "RuntimeOptions",
    "TruncationOptions",
    "flat_option_names",
]

DEFAULT_MODEL = "BAAI/bge-reranker-v2-m3"
# Windows per document at most: 1024 windows of 512 tokens cover ~460k tokens, more than the longest document
# the server takes (200,000 characters); beyond that a value only lets one document hold the model for minutes.
MAX_CHUNKS_PER_DOC = 1024

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
        family: how the model is scored (``crossrank.families``): ``auto`` detects it from the model's
            config.json and name; a family's name (``qwen3-reranker``, ``bge-reranker-gemma``, ...) for a
            renamed or fine-tuned checkpoint.
        cutoff_layer: a layer-wise model's (bge-reranker-v2-minicpm-layerwise) layer whose score head is read;
            an earlier one runs fewer layers, so it scores sooner. ``None``: its last layer, as FlagEmbedding.
    """

    name_or_path: str = DEFAULT_MODEL
    revision: str | None = None
    cache_dir: str | None = None
    allow_pickle: bool = False
    trust_remote_code: bool = False
    family: str = AUTO
    cutoff_layer: int | None = None

    def __post_init__(self) -> None:
        if not self.name_or_path.strip():
            raise ConfigError(
                "model name or path is empty", fix="pass a hub id such as BAAI/bge-reranker-v2-m3 or a folder"
            )
        check_family_name(self.family)


@dataclass(frozen=True, kw_only=True, slots=True)
class RuntimeOptions:
    """Where and in which precision the model runs.

    Attributes:
        device: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
            ``CUDA_VISIBLE_DEVICES`` decides which physical GPUs ``cuda:N`` can name.
        dtype: ``auto`` (float16 on GPU; on CPU float32, bfloat16 autocast or bfloat16 weights, whichever
            was measured fastest on this CPU for the model's shape within the accuracy gate, cached in
            ``~/.cache/crossrank/cpu-precision``; with the ONNX backend, float32 or int8 alike),
            ``float32``, ``float16`` or ``bfloat16``. Scores are always
            computed in float32 after the model, whatever this is. Pass ``float32`` for scores that match
            float32 references to 1e-4.
        num_threads: CPU threads for the runtime (process-wide in torch); ``None`` keeps its default.
        fallback: ``cpu`` scores a pair on the CPU when even that single pair does not fit in GPU
            memory (with a warning); ``none`` raises ``DeviceMemoryError`` instead.
        quantize: ``int8`` runs int8 weights (ONNX backend, CPU), whatever was measured; ``none`` leaves it to
            ``dtype``.
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
        truncation_direction: which end a cut keeps: ``right`` drops the end of a text (keeps its start),
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
    truncation_direction: Direction = "right"
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
        _check_choice("truncation_direction", self.truncation_direction, Direction)
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
        """``max``, ``mean``, ``first`` or ``topk_mean:K`` (1 <= K <= 999999) to an ``Aggregation``."""
        name, _, k = text.strip().partition(":")
        # ASCII digits only, and few of them: int() of thousands of digits raises (Python's int-string limit).
        if name == "topk_mean" and re.fullmatch(r"[0-9]{1,6}", k) and int(k) >= 1:
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
        if not 1 <= self.max_chunks_per_doc <= MAX_CHUNKS_PER_DOC:
            raise ConfigError(
                f"max_chunks_per_doc must be between 1 and {MAX_CHUNKS_PER_DOC}, got {self.max_chunks_per_doc}"
            )

    @property
    def aggregation(self) -> Aggregation:
        """``aggregate`` parsed."""
        return Aggregation.parse(self.aggregate)

    def window(self, room: int) -> tuple[int, int]:
        """Window size and overlap in tokens, given the ``room`` a pair leaves for the document."""
        size = room if self.chunk_tokens is None else min(self.chunk_tokens, room)
        overlap = size // 8 if self.overlap_tokens is None else self.overlap_tokens
        return size, min(overlap, size // 2)


# An instruction is part of every pair's input: more than this many characters is a prompt, not an instruction.
MAX_INSTRUCTION_CHARS = 2000


@dataclass(frozen=True, kw_only=True, slots=True)
class PromptOptions:
    """What a decoder reranker's prompt says besides the query and the document.

    Attributes:
        instruction: the task, in the words the family's prompt puts it (Qwen3-Reranker's ``<Instruct>``,
            bge-reranker-v2-gemma's question, mxbai-rerank-v2's ``instruction:`` line); ``None`` uses the
            family's default. Cross-encoders have no instruction: one given to them is ignored (logged once).
    """

    instruction: str | None = None

    def __post_init__(self) -> None:
        if self.instruction is not None and len(self.instruction) > MAX_INSTRUCTION_CHARS:
            raise ConfigError(
                f"instruction is {len(self.instruction)} characters; at most {MAX_INSTRUCTION_CHARS} are allowed",
                fix="shorten the instruction",
            )


@dataclass(frozen=True, kw_only=True, slots=True)
class RerankOptions:
    """One call's overrides of a reranker's score-changing options; ``None`` keeps the reranker's value.

    Each field is the ``TruncationOptions``, ``ChunkingOptions`` or ``PromptOptions`` field of the same name (a
    test holds them in step). A new ``max_length`` brings the query cap that goes with it unless
    ``query_max_length`` is given.
    """

    max_length: int | None = None
    query_max_length: int | None = None
    truncation_direction: Direction | None = None
    max_tokens_per_doc: int | None = None
    truncate: bool | None = None
    long_query: LongQuery | None = None
    aggregate: str | None = None
    chunk_tokens: int | None = None
    overlap_tokens: int | None = None
    max_chunks_per_doc: int | None = None
    instruction: str | None = None

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RerankOptions:
        """From JSON-like data (a task's or a file's); an unknown name is a ``ConfigError`` naming it."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"unknown rerank option(s): {', '.join(unknown)}", fix=f"use {', '.join(sorted(names))}")
        return cls(**values)

    def apply(
        self, truncation: TruncationOptions, chunking: ChunkingOptions, prompt: PromptOptions
    ) -> tuple[TruncationOptions, ChunkingOptions, PromptOptions]:
        """The three option objects with these overrides (the same objects when there are none)."""
        given = {f.name: v for f in dataclasses.fields(self) if (v := getattr(self, f.name)) is not None}
        if "max_length" in given:
            given.setdefault("query_max_length", None)
        return _replaced(truncation, given), _replaced(chunking, given), _replaced(prompt, given)


def _replaced(options: Any, values: dict[str, Any]) -> Any:
    changes = {f.name: values[f.name] for f in dataclasses.fields(options) if f.name in values}
    return dataclasses.replace(options, **changes) if changes else options


@dataclass(frozen=True, kw_only=True, slots=True)
class RerankerOptions:
    """Everything a ``Reranker`` is built from, as the typed option objects.

    ``Reranker(model, **flat_keywords)``, ``Settings`` (``CROSSRANK_*``) and the CLI's flags all build this
    through ``from_flat``, so a flat name means the same option everywhere.

    Attributes:
        model: which model, and how far to trust it.
        backend: ``torch``, ``onnx`` or ``fake`` (tests).
        runtime: device and precision.
        truncation: how long pairs are cut.
        chunking: how long documents are split and scored.
        prompt: a decoder reranker's instruction.
        max_batch_tokens, max_batch_size: forward-pass sizes; ``None`` takes the backend's for its device.
        cache: the result cache.
    """

    model: ModelSpec = dataclasses.field(default_factory=ModelSpec)
    backend: str = "torch"
    runtime: RuntimeOptions = dataclasses.field(default_factory=RuntimeOptions)
    truncation: TruncationOptions = dataclasses.field(default_factory=TruncationOptions)
    chunking: ChunkingOptions = dataclasses.field(default_factory=ChunkingOptions)
    prompt: PromptOptions = dataclasses.field(default_factory=PromptOptions)
    max_batch_tokens: int | None = None
    max_batch_size: int | None = None
    cache: CacheOptions = dataclasses.field(default_factory=CacheOptions)

    def __post_init__(self) -> None:
        for name in ("max_batch_tokens", "max_batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be at least 1, got {value}")

    @classmethod
    def from_flat(cls, **values: Any) -> RerankerOptions:
        """Build from flat keywords (``model``, ``device``, ``max_length``, ``aggregate``, ``cache_url``, ...)."""
        unknown = sorted(set(values) - set(flat_option_names()))
        if unknown:
            raise ConfigError(
                f"unknown reranker option(s): {', '.join(unknown)}",
                fix=f"use the names of Reranker's keyword arguments: {', '.join(flat_option_names())}",
            )
        groups = {
            group: kind(
                **{field: values[flat] for flat, field in _flat_fields(kind, renames).items() if flat in values}
            )
            for group, kind, renames in _FLAT_GROUPS
        }
        top = {name: values[name] for name in _FLAT_TOP if name in values}
        return cls(**groups, **top)


# The flat keyword of each option, by the object that holds it: a field's own name unless renamed here.
_FLAT_GROUPS: tuple[tuple[str, type, dict[str, str]], ...] = (
    ("model", ModelSpec, {"model": "name_or_path"}),
    ("runtime", RuntimeOptions, {}),
    ("truncation", TruncationOptions, {}),
    ("chunking", ChunkingOptions, {}),
    ("prompt", PromptOptions, {}),
    (
        "cache",
        CacheOptions,
        {
            "cache_size": "size",
            "cache_bytes": "max_bytes",
            "cache_url": "url",
            "cache_ttl": "ttl",
            "cache_prefix": "prefix",
            "cache_timeout": "timeout",
        },
    ),
)
_FLAT_TOP = ("backend", "max_batch_tokens", "max_batch_size")


def _flat_fields(kind: type, renames: dict[str, str]) -> dict[str, str]:
    """Flat keyword to field name, for one option class."""
    renamed = set(renames.values())
    return {**{f.name: f.name for f in dataclasses.fields(kind) if f.name not in renamed}, **renames}


def flat_option_names() -> tuple[str, ...]:
    """Every flat keyword ``RerankerOptions.from_flat`` takes (``Reranker``'s and ``Settings``' names)."""
    names = [flat for _, kind, renames in _FLAT_GROUPS for flat in _flat_fields(kind, renames)]
    return (*names, *_FLAT_TOP)


def _check_choice(name: str, value: str, choices: object) -> None:
    allowed = get_args(choices)
    if value not in allowed:
        raise ConfigError(f"{name} {value!r} is not one of {', '.join(allowed)}", fix=f"pass {name}={allowed[0]!r}")
