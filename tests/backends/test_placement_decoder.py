"""GPU memory planning for decoder (LLM) rerankers: parameters of a checkpoint whose LM head is tied, and the
activation estimate (its key/value cache in, the vocabulary's logits out) against a measured pass and fake GPUs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file
from test_placement import LiveTensorBytes

from crossrank.backends import cpu_mode
from crossrank.backends import torch as torch_backend
from crossrank.backends.base import EncodedBatch, TokenHead
from crossrank.backends.placement import (
    GPU_MAX_BATCH_TOKENS,
    activation_bytes_per_token,
    count_parameters,
    gpu_batching,
    key_value_bytes_per_token,
    needed_bytes,
)
from crossrank.config import RuntimeOptions

GIB = 2**30
# Qwen/Qwen3-Reranker-0.6B's config.json (the sizes the estimate reads).
QWEN3_06B = {
    "hidden_size": 1024,
    "intermediate_size": 3072,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "max_position_embeddings": 40960,
    "vocab_size": 151669,
}


def test_qwen3_reranker_activations_per_token_add_its_key_value_cache_and_not_its_logits() -> None:
    cache = 2 * 28 * 8 * 128 * 2  # keys and values, every layer, 8 key/value heads of 128, float16
    assert key_value_bytes_per_token(QWEN3_06B, "float16") == cache == 114_688
    encoder = 2 * (2 * 3072 + 5 * 1024) + 4 * 40960
    assert activation_bytes_per_token(QWEN3_06B, "float16") == encoder
    assert activation_bytes_per_token(QWEN3_06B, "float16", decoder=True) == encoder + cache
    # The logits over the vocabulary would be more than all of it (the backend reads only the score tokens' rows).
    assert activation_bytes_per_token(QWEN3_06B, "float16", decoder=True) < 151669 * 2


def test_key_value_heads_and_head_width_default_as_transformers_does() -> None:
    # No grouped-query attention and no head_dim in config.json (Gemma-2B sets both; older models neither).
    plain = {"hidden_size": 512, "num_hidden_layers": 4, "num_attention_heads": 8}
    assert key_value_bytes_per_token(plain, "float32") == 2 * 4 * 8 * 64 * 4
    gemma_2b = {"hidden_size": 2048, "num_hidden_layers": 18, "num_attention_heads": 8, "num_key_value_heads": 1}
    assert key_value_bytes_per_token({**gemma_2b, "head_dim": 256}, "bfloat16") == 2 * 18 * 1 * 256 * 2


def test_fake_gpus_a_decoder_gets_the_budget_its_cache_leaves_room_for() -> None:
    roomy = gpu_batching(70 * GIB, QWEN3_06B, "float16", decoder=True)  # an H100 after loading the model
    assert roomy.max_batch_tokens == GPU_MAX_BATCH_TOKENS
    free = 4 * GIB  # a card others fill
    decoder = gpu_batching(free, QWEN3_06B, "float16", decoder=True)
    per_token = activation_bytes_per_token(QWEN3_06B, "float16", decoder=True)
    assert decoder.max_batch_tokens == int(free * 0.7) // per_token
    assert decoder.max_batch_tokens < gpu_batching(free, QWEN3_06B, "float16").max_batch_tokens
    assert decoder.max_batch_size == max(decoder.max_batch_tokens // 64, 64)


def test_tied_lm_head_stored_beside_the_embeddings_is_counted_once(tiny_qwen3_dir: Path, tmp_path: Path) -> None:
    tensors = load_file(str(tiny_qwen3_dir / "model.safetensors"))
    table = tensors["model.embed_tokens.weight"]
    stored = sum(t.size for t in tensors.values())
    assert "lm_head.weight" not in tensors  # transformers saves a tied head once
    assert count_parameters(tiny_qwen3_dir) == stored
    config = json.loads((tiny_qwen3_dir / "config.json").read_text())
    # Some checkpoints store the tied head anyway: still one matrix in memory once loaded.
    save_file({**tensors, "lm_head.weight": table.copy()}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert count_parameters(tmp_path) == stored
    # Untied, the head is a matrix of its own.
    (tmp_path / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": False}))
    assert count_parameters(tmp_path) == stored + table.size
    assert needed_bytes(count_parameters(tmp_path), "float16") > needed_bytes(stored, "float16")


def test_sharded_weights_are_counted_from_every_shard(tiny_qwen3_dir: Path, tmp_path: Path) -> None:
    tensors = load_file(str(tiny_qwen3_dir / "model.safetensors"))
    names = sorted(tensors)
    save_file({n: tensors[n] for n in names[::2]}, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file({n: tensors[n] for n in names[1::2]}, str(tmp_path / "model-00002-of-00002.safetensors"))
    (tmp_path / "config.json").write_text((tiny_qwen3_dir / "config.json").read_text())
    assert count_parameters(tmp_path) == sum(t.size for t in tensors.values()) == count_parameters(tiny_qwen3_dir)


def test_dtype_auto_on_cpu_keeps_a_decoder_in_float32_untimed_even_on_an_amx_cpu(
    tiny_qwen3_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No reduced CPU precision passed the accuracy gate for a decoder family, so none is timed or assumed, whatever
    the CPU's bfloat16 units."""

    def timed(*_: object) -> dict[str, float]:
        raise AssertionError("a mode was timed for a family with no gated reduced precision")

    monkeypatch.setattr(cpu_mode, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16", "amx_tile", "amx_bf16"}))
    monkeypatch.setattr(torch_backend, "time_cpu_modes", timed)
    decision = torch_backend.measured_cpu_mode(tiny_qwen3_dir)
    assert (decision.mode, decision.source, decision.speedups) == ("float32", "not gated", {})


def _deep_narrow_qwen3(target: Path) -> dict[str, Any]:
    """A random Qwen3 of 16 layers at width 256: deep for its width, so its key/value cache outweighs the rest."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    sizes: dict[str, Any] = {
        "hidden_size": 256,
        "intermediate_size": 768,
        "num_hidden_layers": 16,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 64,
        "max_position_embeddings": 512,
    }
    torch.manual_seed(0)
    Qwen3ForCausalLM(Qwen3Config(**sizes, vocab_size=1000, tie_word_embeddings=True)).eval().save_pretrained(target)
    return sizes


@pytest.mark.slow
def test_the_decoder_estimate_covers_a_measured_pass_with_a_shared_prefix(tmp_path: Path) -> None:
    """Peak tensor memory of DecoderBackend's float32 pass on CPU (8 rows of 256 tokens sharing a 64-token prefix)
    stays within the decoder estimate, and exceeds what the encoder estimate would have allowed: the key/value
    cache is what a decoder's pass holds most."""
    from crossrank.backends.decoder import DecoderBackend

    sizes = _deep_narrow_qwen3(tmp_path / "model")
    backend = DecoderBackend(
        tmp_path / "model",
        head=TokenHead(7, 8),
        runtime=RuntimeOptions(device="cpu", dtype="float32"),
        allow_pickle=False,
        trust_remote_code=False,
    )
    rows, length, prefix = 8, 256, 64
    rng = np.random.default_rng(0)
    ids = rng.integers(10, 990, (rows, length), dtype=np.int64)
    ids[:, :prefix] = ids[0, :prefix]
    mask = np.ones_like(ids)
    mask[0, length // 2 :] = 0
    batch = EncodedBatch(input_ids=ids, attention_mask=mask, shared_prefix=np.full(rows, prefix, dtype=np.int64))
    with LiveTensorBytes() as memory:
        scores = backend.forward(batch)
    assert np.isfinite(scores).all()
    estimate = activation_bytes_per_token(sizes, "float32", decoder=True) * rows * length
    without_cache = activation_bytes_per_token(sizes, "float32") * rows * length
    report = f"measured {memory.peak / 2**20:.1f} MiB, estimate {estimate / 2**20:.1f} MiB"
    assert without_cache < memory.peak <= estimate, report
    assert memory.peak >= 0.6 * estimate, report


@pytest.mark.slow
def test_fake_gpu_decoder_backend_sizes_its_batches_with_its_key_value_cache(
    tiny_qwen3_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real DecoderBackend on CPU, then told it sits on a GPU with 20 MiB free (the fake: no GPU here)."""
    from crossrank.backends.decoder import DecoderBackend

    if not getattr(DecoderBackend, "decoder", False):
        pytest.skip("DecoderBackend does not pass decoder=True to the GPU budget yet (the lead's torch.py lines)")
    backend = DecoderBackend(
        tiny_qwen3_dir,
        head=TokenHead(7, 8),
        runtime=RuntimeOptions(device="cpu", dtype="float32"),
        allow_pickle=False,
        trust_remote_code=False,
    )
    free = 20 * 2**20
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, 80 * GIB))
    backend._device = torch.device("cuda:0")
    batching = backend._batching()
    config = json.loads((tiny_qwen3_dir / "config.json").read_text())
    expected = gpu_batching(free, config, "float32", decoder=True)
    assert batching == dataclasses.replace(expected, min_pass_tokens=batching.min_pass_tokens)
    assert batching.max_batch_tokens < gpu_batching(free, config, "float32").max_batch_tokens
