"""Randomly initialised rerankers of a given shape, for speed work and tests.

A random model with bge-reranker-v2-m3's exact shape costs the same FLOPs and memory traffic as
the real one, so speed measured on it holds for the real model; its scores mean nothing. The same
holds for the decoder rerankers' shapes (Qwen3-Reranker-0.6B, bge-reranker-v2-gemma's Gemma-2B).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

__all__ = ["GEMMA_2B_SHAPE", "M3_SHAPE", "QWEN3_RERANKER_0_6B_SHAPE", "build_random_decoder", "build_random_model"]

# bge-reranker-v2-m3's config.json (XLMRobertaForSequenceClassification, 568M parameters).
M3_SHAPE: dict[str, Any] = {
    "architectures": ["XLMRobertaForSequenceClassification"],
    "attention_probs_dropout_prob": 0.1,
    "bos_token_id": 0,
    "classifier_dropout": None,
    "eos_token_id": 2,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 1024,
    "id2label": {"0": "LABEL_0"},
    "initializer_range": 0.02,
    "intermediate_size": 4096,
    "label2id": {"LABEL_0": 0},
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 8194,
    "model_type": "xlm-roberta",
    "num_attention_heads": 16,
    "num_hidden_layers": 24,
    "output_past": True,
    "pad_token_id": 1,
    "position_embedding_type": "absolute",
    "type_vocab_size": 1,
    "use_cache": True,
    "vocab_size": 250002,
}

# Qwen/Qwen3-Reranker-0.6B's config.json (Qwen3ForCausalLM, 596M parameters; Qwen3-0.6B's shape).
QWEN3_RERANKER_0_6B_SHAPE: dict[str, Any] = {
    "architectures": ["Qwen3ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "head_dim": 128,
    "hidden_act": "silu",
    "hidden_size": 1024,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "max_position_embeddings": 40960,
    "max_window_layers": 28,
    "model_type": "qwen3",
    "num_attention_heads": 16,
    "num_hidden_layers": 28,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "sliding_window": None,
    "tie_word_embeddings": True,
    "use_cache": True,
    "use_sliding_window": False,
    "vocab_size": 151669,
}

# google/gemma-2b's config.json, which BAAI/bge-reranker-v2-gemma keeps (GemmaForCausalLM, 2.5B parameters).
GEMMA_2B_SHAPE: dict[str, Any] = {
    "architectures": ["GemmaForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 2,
    "eos_token_id": 1,
    "head_dim": 256,
    "hidden_act": "gelu_pytorch_tanh",
    "hidden_size": 2048,
    "initializer_range": 0.02,
    "intermediate_size": 16384,
    "max_position_embeddings": 8192,
    "model_type": "gemma",
    "num_attention_heads": 8,
    "num_hidden_layers": 18,
    "num_key_value_heads": 1,
    "pad_token_id": 0,
    "rms_norm_eps": 1e-06,
    "rope_theta": 10000.0,
    "tie_word_embeddings": True,
    "use_cache": True,
    "vocab_size": 256000,
}


def build_random_model(target: Path, tokenizer_dir: Path, config: dict[str, Any], *, seed: int = 0) -> Path:
    """Save a random sequence classifier with ``config`` and the tokenizer files of ``tokenizer_dir``.

    ``config`` is a ``config.json`` as a dict (``model_type`` included); ``num_labels`` is 1.
    The same seed gives the same weights.
    """
    values = {k: v for k, v in config.items() if not k.startswith("_") and k != "transformers_version"}
    values.pop("id2label", None)
    values.pop("label2id", None)
    model_config = AutoConfig.for_model(**values, num_labels=1)
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(model_config).eval()  # type: ignore[no-untyped-call]
    return _save(model, target, tokenizer_dir)


def build_random_decoder(target: Path, tokenizer_dir: Path, config: dict[str, Any], *, seed: int = 0) -> Path:
    """Save a random causal LM with ``config`` (a ``config.json`` as a dict) and the files of ``tokenizer_dir``.

    Saved in bfloat16, as the real checkpoints are: half the disk and the build's memory; each system loads it in
    the precision it runs. The same seed gives the same weights.
    """
    values = {k: v for k, v in config.items() if not k.startswith("_") and k != "transformers_version"}
    model_config = AutoConfig.for_model(**values)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(model_config, dtype=torch.bfloat16).eval()  # type: ignore[no-untyped-call]
    return _save(model, target, tokenizer_dir)


def _save(model: Any, target: Path, tokenizer_dir: Path) -> Path:
    """``model`` saved in ``target`` (safetensors) with the tokenizer files of ``tokenizer_dir``."""
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target, safe_serialization=True)
    for item in tokenizer_dir.iterdir():
        if item.is_file() and item.name != "config.json":
            shutil.copy(item, target / item.name)
    return target
