"""A layer-wise MiniCPM reranker (BAAI/bge-reranker-v2-minicpm-layerwise) as a plain transformers Llama, cut at a layer.

The checkpoint's own modelling code (``LayerWiseMiniCPMForCausalLM``, FlagEmbedding's) does not run under
transformers 5, which has no MiniCPM of that kind, and crossrank runs no model's code; the architecture is a Llama
with three scalings, all linear, so they are folded into the weights as they are read:

* the embeddings are multiplied by ``scale_emb``;
* each layer adds ``attn(x) * s`` and ``mlp(x) * s`` to its input, ``s = scale_depth / sqrt(num_hidden_layers)``
  (of the whole checkpoint): ``o_proj`` and ``down_proj`` are multiplied by ``s``.

The score at cutoff layer ``k`` is the state after ``k`` layers through the shared final norm, read by that layer's
head, ``lm_head.{k - start_layer}.linear_head`` (``Linear(hidden, 1)``), at the last real position. So the model
built here is a ``LlamaForCausalLM`` of ``k`` layers whose "language-model head" is that one-row linear: its logit
0 is the score, and the layers after ``k`` are neither read nor run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from transformers import LlamaConfig, LlamaForCausalLM

from crossrank.errors import ConfigError, IntegrityError, UnsupportedModelError
from crossrank.families import FAMILIES

__all__ = ["ARCHITECTURE", "cutoff_layer", "is_layerwise", "load_layerwise"]

(ARCHITECTURE,) = FAMILIES["bge-reranker-minicpm-layerwise"].architectures


def is_layerwise(config: dict[str, Any]) -> bool:
    """Whether a ``config.json`` describes a layer-wise MiniCPM reranker."""
    return ARCHITECTURE in (config.get("architectures") or [])


def cutoff_layer(config: dict[str, Any], requested: int | None) -> int:
    """The layer whose head scores: ``requested``, or the last layer as FlagEmbedding's default
    (``cutoff_layers=None``); one without a head is a ``ConfigError`` naming those that have one."""
    first, last = int(config.get("start_layer", 0)), int(config["num_hidden_layers"])
    layer = last if requested is None else requested
    if not first <= layer <= last:
        raise ConfigError(
            f"cutoff_layer {layer} has no score head: this model's layers {first} to {last} have one",
            fix=f"pass a cutoff_layer from {first} to {last} (or none: {last}, the last, as upstream)",
        )
    return layer


def load_layerwise(model_dir: Path, layer: int | None, dtype: torch.dtype) -> Any:
    """The ``LlamaForCausalLM`` of ``model_dir`` cut at cutoff layer ``layer`` (``None``: the last), in ``dtype``."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    if config.get("head_type", "simple") != "simple":
        raise UnsupportedModelError(
            f"{model_dir.name} has layer-wise heads of type {config['head_type']!r}; crossrank runs the 'simple' "
            "heads (one logit per layer) of bge-reranker-v2-minicpm-layerwise",
            fix="use BAAI/bge-reranker-v2-minicpm-layerwise or a fine-tune of it",
        )
    k = cutoff_layer(config, layer)
    llama = _llama_config(config, k)
    with torch.device("meta"):
        model = LlamaForCausalLM(llama)
        model.lm_head = torch.nn.Linear(llama.hidden_size, 1, bias=False)
    model.load_state_dict(_folded_state(model_dir, config, k, dtype), strict=True, assign=True)
    # The rotary frequencies are a buffer, not a weight: computed again off the meta device.
    model.model.rotary_emb = type(model.model.rotary_emb)(llama)
    return model


def _llama_config(config: dict[str, Any], layers: int) -> LlamaConfig:
    """The Llama of MiniCPM's shape with ``layers`` layers."""
    scaling = config.get("rope_scaling")
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": float(config.get("rope_theta", 10000.0))}
    if scaling:
        # MiniCPM's "linear" divides positions by the factor, as Llama's does; its "dynamic" NTK differs from
        # transformers' in when the base is recomputed, so it is refused rather than approximated.
        if scaling.get("type", scaling.get("rope_type")) != "linear":
            raise UnsupportedModelError(
                f"rope_scaling {scaling} is not supported for layer-wise MiniCPM models (only 'linear' is)",
                fix="use BAAI/bge-reranker-v2-minicpm-layerwise's own config.json (no rope_scaling)",
            )
        rope = {**rope, "rope_type": "linear", "factor": float(scaling["factor"])}
    heads = int(config["num_attention_heads"])
    return LlamaConfig(
        vocab_size=int(config["vocab_size"]),
        hidden_size=int(config["hidden_size"]),
        intermediate_size=int(config["intermediate_size"]),
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=int(config.get("num_key_value_heads") or heads),
        head_dim=int(config["hidden_size"]) // heads,
        hidden_act=str(config.get("hidden_act", "silu")),
        max_position_embeddings=int(config.get("max_position_embeddings", 4096)),
        rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
        rope_parameters=rope,
        attention_bias=bool(config.get("attention_bias", False)),
        tie_word_embeddings=False,
        pad_token_id=config.get("pad_token_id"),
        bos_token_id=config.get("bos_token_id"),
        eos_token_id=config.get("eos_token_id"),
    )


def _folded_state(model_dir: Path, config: dict[str, Any], k: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The weights the cut model reads, by its parameter names, with MiniCPM's scalings folded in (in float32,
    then cast to ``dtype``)."""
    residual = float(config.get("scale_depth", 1.0)) / math.sqrt(int(config["num_hidden_layers"]))
    head = f"lm_head.{k - int(config.get('start_layer', 0))}" if config.get("head_multi", True) else "lm_head"
    wanted: dict[str, tuple[str, float]] = {
        "model.embed_tokens.weight": ("model.embed_tokens.weight", float(config.get("scale_emb", 1.0))),
        "model.norm.weight": ("model.norm.weight", 1.0),
        "lm_head.weight": (f"{head}.linear_head.weight", 1.0),
    }
    bias = bool(config.get("attention_bias", False))
    for i in range(k):
        layer = f"model.layers.{i}."
        names = [
            "input_layernorm.weight",
            "post_attention_layernorm.weight",
            *(f"self_attn.{p}_proj.{t}" for p in "qkv" for t in ("weight", "bias")[: 1 + bias]),
            "mlp.gate_proj.weight",
            "mlp.up_proj.weight",
        ]
        wanted.update({layer + name: (layer + name, 1.0) for name in names})
        scaled = ["self_attn.o_proj.weight", "mlp.down_proj.weight", *(["self_attn.o_proj.bias"] if bias else [])]
        wanted.update({layer + name: (layer + name, residual) for name in scaled})
    files = _tensor_files(model_dir)
    absent = [source for source, _ in wanted.values() if source not in files]
    if absent:
        raise IntegrityError(
            f"{model_dir.name} has no tensor {', '.join(absent[:3])}{' ...' if len(absent) > 3 else ''} "
            "that a layer-wise MiniCPM reranker needs",
            fix="the weights are incomplete or of another model: download the model again",
        )
    state = {}
    for path in sorted({files[source] for source, _ in wanted.values()}):
        with safe_open(path, framework="pt") as weights:
            for target, (source, scale) in wanted.items():
                if files[source] == path:
                    tensor = weights.get_tensor(source)
                    state[target] = (tensor.float() * scale if scale != 1.0 else tensor).to(dtype)
    return state


def _tensor_files(model_dir: Path) -> dict[str, Path]:
    """Each tensor's safetensors file (headers only are read here)."""
    files: dict[str, Path] = {}
    for path in sorted(model_dir.glob("*.safetensors")):
        try:
            with safe_open(path, framework="pt") as weights:
                files.update(dict.fromkeys(weights.keys(), path))
        except (OSError, SafetensorError) as exc:
            raise IntegrityError(
                f"could not read {path.name} in {model_dir.name}: {exc}",
                fix="the file is incomplete or corrupt: download the model again",
            ) from exc
    return files
