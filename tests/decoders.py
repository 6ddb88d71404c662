"""Tiny random decoder rerankers of each family's architecture, built in the test (no hub).

The tokenizer is a small byte-level BPE trained here on a fixed text, with Qwen's special tokens, so the prompt's
chat markers are single tokens and "yes"/"no" are words of the vocabulary. Parity with upstream implementations
on a real Qwen tokenizer lives in tests/families.
"""

from __future__ import annotations

from pathlib import Path

_CORPUS = (
    "the giant panda is a bear native to south central china. pandas eat bamboo. "
    "what is a panda? where do pandas live? yes no 0 1 Yes No query document instruction relevance "
    "Judge whether the Document meets the requirements based on the Query and the Instruct provided. "
    'Note that the answer can only be "yes" or "no". Given a web search query, retrieve relevant passages '
    "that answer the query. system user assistant think Paris is the capital of France. "
    "Berlin is the capital of Germany. The quick brown fox jumps over the lazy dog. "
)
_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]


def build_qwen_like_tokenizer(target: Path) -> None:
    """A byte-level BPE tokenizer with Qwen's special tokens, saved as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=_SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator([_CORPUS] * 8, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.save_pretrained(target)


def build_tiny_qwen3(target: Path, *, seed: int = 0) -> Path:
    """A Qwen3ForCausalLM of 2 layers (hidden 64) with the tokenizer above, in ``target`` (named like the
    family's checkpoints, so the family is detected from the folder's name)."""
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    target.mkdir(parents=True, exist_ok=True)
    build_qwen_like_tokenizer(target)
    vocabulary = len(AutoTokenizer.from_pretrained(target))
    torch.manual_seed(seed)
    config = Qwen3Config(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        intermediate_size=128,
        vocab_size=vocabulary,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
    )
    Qwen3ForCausalLM(config).eval().save_pretrained(target)
    return target
