"""Randomly initialised cross-encoders of a given shape, for speed work and tests.

A random model with bge-reranker-v2-m3's exact shape costs the same FLOPs and memory traffic as
the real one, so speed measured on it holds for the real model; its scores mean nothing.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification

__all__ = ["M3_SHAPE", "build_random_model"]

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
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target, safe_serialization=True)
    for item in tokenizer_dir.iterdir():
        if item.is_file() and item.name != "config.json":
            shutil.copy(item, target / item.name)
    return target
