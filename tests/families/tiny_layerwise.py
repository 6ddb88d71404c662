"""A tiny random bge-reranker-v2-minicpm-layerwise, built in the test (no hub, no modelling code).

Its config.json has the real checkpoint's fields (``LayerWiseMiniCPMForCausalLM``, ``scale_emb``, ``scale_depth``,
``start_layer``, simple per-layer heads, an ``auto_map`` naming code files that are not there: crossrank runs none,
FlagEmbedding runs its own copy); its weights have the real names and shapes, random, in two safetensors shards with
an index. The tokenizer is the Gemma-style BPE of tiny_models.py (as for bge-reranker-v2-gemma: "Yes" and "\\n" single
tokens, BOS prepended) with the real one's special tokens, ``<s>`` ``</s>`` ``<unk>``.
"""

from __future__ import annotations

import json
from pathlib import Path

from tiny_models import build_gemma_like_tokenizer

CONFIG = {
    "architectures": ["LayerWiseMiniCPMForCausalLM"],
    "auto_map": {
        "AutoConfig": "configuration_minicpm_reranker.LayerWiseMiniCPMConfig",
        "AutoModelForCausalLM": "modeling_minicpm_reranker.LayerWiseMiniCPMForCausalLM",
    },
    "model_type": "minicpm",
    "vocab_size": 600,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "hidden_act": "silu",
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "rope_scaling": None,
    "attention_bias": False,
    "attention_dropout": 0.0,
    "scale_emb": 12,
    "dim_model_base": 16,
    "scale_depth": 1.4,
    "start_layer": 1,
    "head_multi": True,
    "head_type": "simple",
    "tie_word_embeddings": False,
    "pretraining_tp": 1,
    "torch_dtype": "float32",
    # FlagEmbedding's modelling code fails with a cache on transformers 4.57 (DynamicCache.get_usable_length).
    "use_cache": False,
    # build_gemma_like_tokenizer's special tokens come first, in its order: pad, eos, bos, unk.
    "pad_token_id": 0,
    "eos_token_id": 1,
    "bos_token_id": 2,
}


def weight_shapes(config: dict[str, object]) -> dict[str, tuple[int, ...]]:
    """LayerWiseMiniCPMForCausalLM's tensors (simple per-layer heads) with their shapes."""
    hidden, inner, layers = (
        int(config["hidden_size"]),
        int(config["intermediate_size"]),
        int(config["num_hidden_layers"]),
    )
    kv = int(config["num_key_value_heads"]) * hidden // int(config["num_attention_heads"])
    shapes: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (int(config["vocab_size"]), hidden),
        "model.norm.weight": (hidden,),
    }
    for i in range(layers):
        layer = f"model.layers.{i}."
        shapes |= {
            layer + "self_attn.q_proj.weight": (hidden, hidden),
            layer + "self_attn.k_proj.weight": (kv, hidden),
            layer + "self_attn.v_proj.weight": (kv, hidden),
            layer + "self_attn.o_proj.weight": (hidden, hidden),
            layer + "mlp.gate_proj.weight": (inner, hidden),
            layer + "mlp.up_proj.weight": (inner, hidden),
            layer + "mlp.down_proj.weight": (hidden, inner),
            layer + "input_layernorm.weight": (hidden,),
            layer + "post_attention_layernorm.weight": (hidden,),
        }
    # One Linear(hidden, 1) per layer from start_layer to the last.
    for j in range(layers + 1 - int(config["start_layer"])):
        shapes[f"lm_head.{j}.linear_head.weight"] = (1, hidden)
    return shapes


def build_tiny_layerwise(target: Path, *, seed: int = 0, leave_out: str | None = None) -> Path:
    """The model in ``target`` (named like the real one, so the family is also detected by name); ``leave_out``
    names a tensor not written (a broken checkpoint)."""
    import torch
    from safetensors.torch import save_file

    build_gemma_like_tokenizer(target, bos="<s>", eos="</s>", unk="<unk>", pad="<pad>")
    (target / "config.json").write_text(json.dumps(CONFIG, indent=2))
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in sorted(weight_shapes(CONFIG).items()):
        # Wider than the usual init (0.02), so that pairs score apart; MiniCPM's norms multiply by their weight.
        weight = torch.randn(shape, generator=generator) * 0.2
        state[name] = weight + 1.0 if name.endswith("norm.weight") else weight
    if leave_out is not None:
        del state[leave_out]
    # Two shards with an index, as a checkpoint of 2B parameters comes: the layers in the second.
    shards: dict[str, dict[str, torch.Tensor]] = {
        "model-00001-of-00002.safetensors": {},
        "model-00002-of-00002.safetensors": {},
    }
    for name, tensor in state.items():
        shards[sorted(shards)[name.startswith("model.layers.")]][name] = tensor
    for file, tensors in shards.items():
        save_file(tensors, str(target / file), metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {name: file for file, tensors in shards.items() for name in tensors}}
    (target / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return target
