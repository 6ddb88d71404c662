"""Where a model runs when ``device="auto"`` (the GPU with the most free memory if the model fits, else
CPU), how many tokens a forward pass may take on a GPU (sized to the memory left after loading), and
the least a pass costs there (from two timed passes). Cross-encoders and decoder (LLM) rerankers alike: a
decoder's pass also keeps every layer's keys and values (``activation_bytes_per_token``).

Pure arithmetic over numbers the torch backend measures, so the decisions are tested without a GPU.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open

from crossrank.config import BatchingOptions

__all__ = [
    "DTYPE_BYTES",
    "GPU_MAX_BATCH_TOKENS",
    "GpuMemory",
    "Placement",
    "activation_bytes_per_token",
    "choose_placement",
    "count_parameters",
    "gpu_batching",
    "key_value_bytes_per_token",
    "min_pass_tokens",
    "needed_bytes",
    "stored_dtype",
]

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
# Room for activations, the CUDA context and the allocator's slack beyond the weights: a 512-token
# batch of bge-reranker-v2-m3 (XLM-R large) under the default 8192-token budget needs about 1 GiB.
_HEADROOM_BYTES = 1536 * 2**20
_HEADROOM_FACTOR = 1.2
# A GPU pass of more tokens than this gains little throughput and holds a server's other requests back;
# smaller GPUs or fuller ones get less (gpu_batching). TEI's default budget is 16384.
GPU_MAX_BATCH_TOKENS = 32768
# Of the memory free after loading, what activations may take: the rest is for the caching allocator's
# fragmentation, cuBLAS workspaces and the other processes on the card growing a little.
_ACTIVATION_SHARE = 0.7
# A short pair, in tokens: the pairs-per-pass cap lets a budget fill with such pairs.
_SHORT_PAIR_TOKENS = 64


@dataclass(frozen=True, slots=True)
class GpuMemory:
    """One visible GPU: its torch index, free bytes now, and whether it computes in bfloat16."""

    index: int
    free_bytes: int
    bf16: bool


@dataclass(frozen=True, slots=True)
class Placement:
    """The device and dtype chosen, and why (logged, and shown by ``crossrank doctor``)."""

    device: str
    dtype: str
    reason: str


def stored_dtype(model_dir: Path) -> str:
    """The dtype config.json says the weights were saved in (float32 when it does not say)."""
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    return str(config.get("torch_dtype") or config.get("dtype") or "float32")


def _stored_parameters(files: Sequence[Path], tied: bool) -> int | None:
    """Elements of the tensors in safetensors ``files`` (from their headers), an LM head tied to the token
    embeddings counted once; ``None`` when a header does not read."""
    shapes: dict[str, list[int]] = {}
    try:
        for file in files:
            with safe_open(str(file), framework="numpy") as weights:
                shapes |= {name: weights.get_slice(name).get_shape() for name in weights.keys()}  # noqa: SIM118
    except (OSError, SafetensorError):
        return None
    if tied and any(name.endswith("embed_tokens.weight") for name in shapes):
        # Some checkpoints store the head beside the table it is tied to; transformers keeps one of them.
        shapes = {name: shape for name, shape in shapes.items() if not name.endswith("lm_head.weight")}
    return sum(math.prod(shape) for shape in shapes.values())


def count_parameters(model_dir: Path) -> int:
    """Parameters of the model as loaded: from the safetensors headers (an LM head tied to the token embeddings
    counted once, as transformers ties them at load), else from the weight files' sizes and the dtype they are
    stored in (pickle weights, or headers that do not read)."""
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    files = sorted(model_dir.glob("*.safetensors"))
    counted = _stored_parameters(files, bool(config.get("tie_word_embeddings"))) if files else None
    if counted is not None:
        return counted
    stored = stored_dtype(model_dir)
    size = sum(p.stat().st_size for p in files) or sum(p.stat().st_size for p in model_dir.glob("pytorch_model*.bin"))
    return size // DTYPE_BYTES.get(stored, 4)


def needed_bytes(parameters: int, dtype: str) -> int:
    """Memory a model of ``parameters`` needs to score at ``dtype``: weights plus activation headroom."""
    return int(parameters * DTYPE_BYTES[dtype] * _HEADROOM_FACTOR) + _HEADROOM_BYTES


def choose_placement(dtype: str, gpus: Sequence[GpuMemory], parameters: int, *, prefer_bf16: bool) -> Placement:
    """Pick the GPU with the most free memory if the model fits there at ``dtype``, else the CPU.

    ``dtype="auto"`` means float16 on a GPU (bfloat16 when the model was trained in it and the GPU has
    it) and float32 on CPU.
    """
    if not gpus:
        return Placement("cpu", "float32" if dtype == "auto" else dtype, "no CUDA GPU is visible")
    best = max(gpus, key=lambda g: g.free_bytes)
    chosen = dtype
    if dtype == "auto":
        chosen = "bfloat16" if prefer_bf16 and best.bf16 else "float16"
    need = needed_bytes(parameters, chosen)
    gib = 2**30
    if best.free_bytes >= need:
        return Placement(
            f"cuda:{best.index}",
            chosen,
            f"cuda:{best.index} has {best.free_bytes / gib:.1f} GiB free, the model needs about {need / gib:.1f} GiB "
            f"at {chosen}",
        )
    cpu_dtype = "float32" if dtype == "auto" else dtype
    return Placement(
        "cpu",
        cpu_dtype,
        f"the model needs about {need / gib:.1f} GiB at {chosen} but the emptiest GPU, cuda:{best.index}, has "
        f"{best.free_bytes / gib:.1f} GiB free; running on CPU",
    )


def key_value_bytes_per_token(config: Mapping[str, Any], dtype: str) -> int:
    """The keys and values a decoder keeps for one token in every layer at ``dtype`` (its key/value cache).

    ``DecoderBackend`` runs a query's shared prefix once and expands its cache to every row, and each row's own
    tokens join that cache as the pass goes: so for each padded token of a batch, every layer's keys and values
    stay alive until the pass ends. Grouped-query attention keeps ``num_key_value_heads`` of them. Qwen3-Reranker-0.6B
    in float16: 112 KiB per token, five times what its feed-forward and residual stream hold.
    """
    hidden = int(config.get("hidden_size", 1024))
    heads = int(config.get("num_attention_heads") or max(hidden // 64, 1))
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or hidden // heads)
    return 2 * int(config.get("num_hidden_layers", 1)) * kv_heads * head_dim * DTYPE_BYTES[dtype]


def activation_bytes_per_token(config: Mapping[str, Any], dtype: str, *, decoder: bool = False) -> int:
    """Peak activation memory per padded token of one forward pass at ``dtype``: a BERT-like encoder's, or with
    ``decoder`` a decoder (LLM) reranker's.

    Inside a layer the feed-forward input and output (2 x intermediate) are alive beside the residual
    stream, the attention projections and the embedding output, which the model keeps through every
    layer (about 5 x hidden). The attention mask holds one value per position of the longest pair, taken
    as the model's whole position table (the worst case): a boolean mask, its negation and the ``dtype``
    copy that the fused attention kernels read. Layers run one after another, so depth does not add. For
    bge-reranker-v2-m3 in float16 this is 59 KB per token; the peak tensor memory measured on CPU at its
    width was 11-15 x hidden per token against 16-20 estimated (tests/backends/test_placement.py; a GPU's
    own counter: tests/gpu).

    A decoder adds its key/value cache (``key_value_bytes_per_token``), which depth does add to. Its logits
    over the whole vocabulary (150,000-250,000 values per token, more than all the rest) are not counted: the
    backend computes only the score tokens' rows of the LM head, at each row's last position.
    """
    hidden = int(config.get("hidden_size", 1024))
    intermediate = int(config.get("intermediate_size", 4 * hidden))
    positions = int(config.get("max_position_embeddings", 512))
    size = DTYPE_BYTES[dtype]
    cache = key_value_bytes_per_token(config, dtype) if decoder else 0
    return size * (2 * intermediate + 5 * hidden) + (size + 2) * positions + cache


def gpu_batching(free_bytes: int, config: Mapping[str, Any], dtype: str, *, decoder: bool = False) -> BatchingOptions:
    """Tokens and pairs per forward pass for a GPU with ``free_bytes`` free once the model is loaded (``decoder``:
    a decoder reranker's, see ``activation_bytes_per_token``).

    The token budget is what a share of the free memory holds in activations, at most
    ``GPU_MAX_BATCH_TOKENS``; a card that others fill gets a smaller one instead of out-of-memory errors
    (which remain the backstop: the torch backend halves a batch that still does not fit). The pairs cap
    lets the budget fill with short pairs (and is never below the CPU's 64).
    """
    tokens = int(max(free_bytes, 0) * _ACTIVATION_SHARE) // activation_bytes_per_token(config, dtype, decoder=decoder)
    tokens = min(max(tokens, 1), GPU_MAX_BATCH_TOKENS)
    pairs = max(tokens // _SHORT_PAIR_TOKENS, BatchingOptions().max_batch_size)
    return BatchingOptions(max_batch_tokens=tokens, max_batch_size=pairs)


def min_pass_tokens(one_pair_seconds: float, full_seconds: float, full_tokens: int) -> int:
    """The least a forward pass costs on a device, in padded tokens, from a one-pair pass and a full one.

    A GPU runs a pass's kernels while Python launches the next ones, so a small pass takes about its
    launch time whatever it holds and a full one about its arithmetic: below the tokens the device
    computes in a one-pair pass's time, a smaller batch saves nothing, and the planner should rather pad
    than split there. At most ``full_tokens`` (when the full pass measured no slower than the small one);
    0 (unpriced) without a time for the full pass.

    >>> min_pass_tokens(0.004, 0.020, 16384)  # launches take 4 ms, 16,384 tokens take 20 ms
    3276
    """
    if full_seconds <= 0:
        return 0
    return int(min(one_pair_seconds / full_seconds, 1.0) * full_tokens)
