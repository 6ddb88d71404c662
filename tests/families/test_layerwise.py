"""bge-reranker-v2-minicpm-layerwise, run natively (crossrank.backends.minicpm), on a tiny random checkpoint
(tiny_layerwise.py): its scores against the architecture's math written out here from FlagEmbedding's modelling code
(fast), and against FlagEmbedding's own ``LayerWiseFlagLLMReranker`` in its environment (slow; flag_peer.py: the
Python named by ``CROSSRANK_TEST_FLAG_PYTHON``, made by .ci/peer_env.sh); the cutoff layer; the errors.

Truncation: FlagEmbedding cuts ``"B: "+passage`` to ``max_length`` tokens, and ``[bos] "A: "+query "\\n" "B: "+passage``
to ``max_length + len("\\n") + len(prompt)`` tokens, then adds ``"\\n" + prompt``; crossrank's ``max_length`` counts
the whole input, so the one that cuts a pair as FlagEmbedding's ``max_length`` does is the length of FlagEmbedding's
cut input (``crossrank_max_length``), which depends on the query's length.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from flag_peer import flag_peer_scores
from safetensors.torch import load_file
from tiny_layerwise import CONFIG, build_tiny_layerwise
from transformers import AutoTokenizer

from crossrank import ConfigError, IntegrityError, Reranker
from crossrank.backends.decoder import DecoderBackend
from crossrank.backends.minicpm import cutoff_layer
from crossrank.config import RuntimeOptions
from crossrank.families import FAMILIES
from crossrank.loader import describe, load_tokenizer
from crossrank.settings import Settings

FAMILY = FAMILIES["bge-reranker-minicpm-layerwise"]
PROMPT = FAMILY.default_instruction or ""
LAST, OTHER = int(CONFIG["num_hidden_layers"]), 2
# A query of more than a few tokens, so that its documents share a prefix worth a pass of its own.
QUERY = "what is the capital of france and of germany and of china"
DOCS = [
    "paris is the capital of france",
    "berlin is the capital of germany",
    "the giant panda eats bamboo",
    "hi",
    "beijing is the capital of china and pandas live there",
]
LONG_DOC = " ".join(["the sun and the moon and the river and the mountain"] * 20)
PAIRS = [[QUERY, doc] for doc in DOCS] + [["what is panda?", "The giant panda is a bear native to china."]]
UPSTREAM_MAX_LENGTH = 40  # FlagEmbedding's max_length that cuts the long document
LONG_QUERIES = ["hello", QUERY]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_layerwise(tmp_path_factory.mktemp("layerwise") / "bge-reranker-v2-minicpm-layerwise-tiny")


@pytest.fixture(scope="module")
def reranker(model_dir: Path) -> Iterator[Reranker]:
    """The default: no trust_remote_code, the last layer's head."""
    with Reranker(str(model_dir), device="cpu", dtype="float32") as loaded:
        yield loaded


def _backend(model_dir: Path, layer: int) -> DecoderBackend:
    """The torch backend with the model's score head at cutoff ``layer`` (what ``cutoff_layer=layer`` loads)."""
    head = load_tokenizer(model_dir).head()
    assert head is not None
    return DecoderBackend(
        model_dir,
        head=dataclasses.replace(head, layer=layer),
        runtime=RuntimeOptions(device="cpu", dtype="float32"),
        allow_pickle=False,
        trust_remote_code=False,
    )


@pytest.fixture(scope="module")
def reranker_at_other_layer(model_dir: Path) -> Iterator[Reranker]:
    """Cut at layer ``OTHER``."""
    with Reranker(str(model_dir), device="cpu", dtype="float32", cutoff_layer=OTHER) as loaded:
        yield loaded


# --- The reference: FlagEmbedding's input rules and LayerWiseMiniCPMForCausalLM's math, written out. ---


def upstream_ids(tokenizer: Any, query: str, passage: str, max_length: int = 512) -> list[int]:
    """LayerWiseFlagLLMReranker's input ids for one pair (FlagEmbedding 1.4.2, decoder_only/layerwise.py)."""

    def encode(text: str, cap: int | None = None) -> list[int]:
        ids: list[int] = tokenizer(text, add_special_tokens=False, max_length=cap, truncation=cap is not None)[
            "input_ids"
        ]
        return ids

    sep, prompt = encode("\n"), encode(PROMPT)
    first = [tokenizer.bos_token_id, *encode("A: " + query, max_length * 3 // 4)]
    second = sep + encode("B: " + passage, max_length)
    remove = len(first) + len(second) - (max_length + len(sep) + len(prompt))
    if 0 < remove < len(second):  # "only_second" truncation: the passage's end goes
        second = second[:-remove]
    return first + second + sep + prompt


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def _rope(x: torch.Tensor, theta: float) -> torch.Tensor:
    half = x.shape[-1] // 2
    inverse = 1.0 / (theta ** (torch.arange(0, 2 * half, 2).float() / (2 * half)))
    angles = torch.outer(torch.arange(x.shape[1]).float(), inverse).repeat(1, 2)
    return x * angles.cos() + torch.cat((-x[..., half:], x[..., :half]), -1) * angles.sin()


@functools.cache
def _checkpoint(model_dir: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The config and every tensor of a checkpoint, as saved."""
    weights: dict[str, torch.Tensor] = {}
    for shard in sorted(model_dir.glob("*.safetensors")):
        weights |= load_file(str(shard))
    return json.loads((model_dir / "config.json").read_text()), weights


def layerwise_score(model_dir: Path, ids: list[int], layer: int) -> float:
    """The score of one unpadded input at cutoff ``layer``: MiniCPM's scaled embeddings and residuals, the shared
    final norm after ``layer`` layers, that layer's head at the last token (no folding, no cache, no transformers)."""
    config, w = _checkpoint(model_dir)
    heads, kv_heads, eps = config["num_attention_heads"], config["num_key_value_heads"], config["rms_norm_eps"]
    size = config["hidden_size"] // heads
    residual = config["scale_depth"] / math.sqrt(config["num_hidden_layers"])
    x = w["model.embed_tokens.weight"][torch.tensor(ids)] * config["scale_emb"]
    n = len(ids)
    causal = torch.full((n, n), float("-inf")).triu(1)
    for i in range(layer):
        p = f"model.layers.{i}."
        h = _rms(x, w[p + "input_layernorm.weight"], eps)
        q = (h @ w[p + "self_attn.q_proj.weight"].T).view(n, heads, size).transpose(0, 1)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).view(n, kv_heads, size).transpose(0, 1)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).view(n, kv_heads, size).transpose(0, 1)
        q, k = _rope(q, config["rope_theta"]), _rope(k, config["rope_theta"])
        k, v = k.repeat_interleave(heads // kv_heads, 0), v.repeat_interleave(heads // kv_heads, 0)
        attended = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(size) + causal, -1) @ v
        x = x + attended.transpose(0, 1).reshape(n, -1) @ w[p + "self_attn.o_proj.weight"].T * residual
        h = _rms(x, w[p + "post_attention_layernorm.weight"], eps)
        gated = torch.nn.functional.silu(h @ w[p + "mlp.gate_proj.weight"].T) * (h @ w[p + "mlp.up_proj.weight"].T)
        x = x + gated @ w[p + "mlp.down_proj.weight"].T * residual
    head = w[f"lm_head.{layer - config['start_layer']}.linear_head.weight"][0]
    return float(_rms(x, w["model.norm.weight"], eps)[-1] @ head)


def crossrank_max_length(tokenizer: Any, query: str, upstream: int) -> int:
    """crossrank's ``max_length`` that cuts (``query``, a long passage) where FlagEmbedding's ``upstream`` does."""

    def length(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    first, sep, prompt = 1 + length("A: " + query), length("\n"), length(PROMPT)
    passage = min(upstream, upstream + prompt - first)  # the passage's own cap, or the pair's
    return first + sep + passage + sep + prompt


def _scores(reranker: Reranker, pairs: list[list[str]]) -> list[float]:
    return [float(s) for s in reranker.compute_score([(q, d) for q, d in pairs])]


def _first_window_score(reranker: Reranker, query: str, document: str, max_length: int) -> float:
    """The score of ``document`` cut to its first window, as FlagEmbedding cuts it."""
    return reranker.rerank(query, [document], max_length=max_length, aggregate="first").results[0].score


# --- Fast: against the math above. ---


def test_the_default_layer_scores_as_the_layerwise_math_without_remote_code(
    reranker: Reranker, model_dir: Path
) -> None:
    assert reranker.family.name == "bge-reranker-minicpm-layerwise"
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
    expected = [layerwise_score(model_dir, upstream_ids(tokenizer, q, d), LAST) for q, d in PAIRS]
    # rerank() runs the query's documents together, their shared prefix (prompt start and query) once.
    ranked = reranker.rerank(QUERY, DOCS)
    assert [r.score for r in sorted(ranked.results, key=lambda r: r.index)] == pytest.approx(expected[:5], abs=1e-5)
    assert _scores(reranker, PAIRS) == pytest.approx(expected, abs=1e-5)


def test_another_cutoff_layer_reads_that_layers_head(reranker_at_other_layer: Reranker, model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
    at_other = [layerwise_score(model_dir, upstream_ids(tokenizer, q, d), OTHER) for q, d in PAIRS]
    at_last = [layerwise_score(model_dir, upstream_ids(tokenizer, q, d), LAST) for q, d in PAIRS]
    assert _scores(reranker_at_other_layer, PAIRS) == pytest.approx(at_other, abs=1e-5)
    assert min(abs(a - b) for a, b in zip(at_other, at_last, strict=True)) > 1e-3  # the layers do differ


def test_a_long_document_is_cut_as_upstream_cuts_it_and_keeps_the_prompt_end(
    reranker: Reranker, model_dir: Path
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
    prompt = tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    for query in LONG_QUERIES:
        ids = upstream_ids(tokenizer, query, LONG_DOC, UPSTREAM_MAX_LENGTH)
        assert ids[-len(prompt) :] == prompt
        max_length = crossrank_max_length(tokenizer, query, UPSTREAM_MAX_LENGTH)
        assert len(ids) == max_length  # cut, and the conversion holds
        got = _first_window_score(reranker, query, LONG_DOC, max_length)
        assert got == pytest.approx(layerwise_score(model_dir, ids, LAST), abs=1e-5)


# --- Errors. ---


def test_a_cutoff_layer_without_a_head_is_a_config_error_naming_the_range(model_dir: Path) -> None:
    assert cutoff_layer(CONFIG, None) == LAST  # upstream's default: the last layer
    for layer in (0, LAST + 1):
        with pytest.raises(ConfigError, match=f"cutoff_layer {layer} .* layers 1 to {LAST}") as caught:
            _backend(model_dir, layer)
        assert f"from 1 to {LAST}" in (caught.value.fix or "")


def test_the_cutoff_layer_is_an_option_of_every_door_and_part_of_the_fingerprint(
    reranker: Reranker, reranker_at_other_layer: Reranker, model_dir: Path
) -> None:
    assert reranker_at_other_layer.fingerprint().values["cutoff_layer"] == OTHER
    assert "cutoff_layer" not in reranker.fingerprint().values
    options = Settings(model=str(model_dir), cutoff_layer=OTHER).reranker_options()
    assert options.model.cutoff_layer == OTHER
    assert describe(options).values["cutoff_layer"] == OTHER


def test_a_cutoff_layer_for_a_model_without_layer_heads_is_a_config_error(
    tiny_qwen3_dir: Path, fake_model_dir: Path
) -> None:
    with pytest.raises(ConfigError, match="cutoff_layer 1 is for layer-wise models"):
        _backend(tiny_qwen3_dir, 1)
    with pytest.raises(ConfigError, match=r"cutoff_layer 1 is for layer-wise rerankers.*cross-encoder"):
        Reranker(str(fake_model_dir), backend="fake", cutoff_layer=1)


def test_a_checkpoint_without_the_chosen_layers_head_is_an_integrity_error_naming_it(tmp_path: Path) -> None:
    broken = build_tiny_layerwise(
        tmp_path / "bge-reranker-v2-minicpm-layerwise-tiny", leave_out=f"lm_head.{LAST - 1}.linear_head.weight"
    )
    with pytest.raises(IntegrityError, match=rf"lm_head\.{LAST - 1}\.linear_head\.weight") as caught:
        Reranker(str(broken), device="cpu", dtype="float32")
    assert "download the model again" in (caught.value.fix or "")


# --- Slow: against FlagEmbedding's own LayerWiseFlagLLMReranker, in its environment. ---


@pytest.mark.slow
def test_scores_match_flagembeddings_layerwise_reranker(
    reranker: Reranker, reranker_at_other_layer: Reranker, model_dir: Path
) -> None:
    pairs = [(q, d) for q, d in PAIRS]
    default = flag_peer_scores("layerwise", model_dir, pairs)  # cutoff_layers=None: the last layer
    assert _scores(reranker, PAIRS) == pytest.approx(default, abs=1e-4)
    other = flag_peer_scores("layerwise", model_dir, pairs, cutoff_layers=[OTHER])
    assert _scores(reranker_at_other_layer, PAIRS) == pytest.approx(other, abs=1e-4)
    long = [(q, LONG_DOC) for q in LONG_QUERIES]
    cut = flag_peer_scores("layerwise", model_dir, long, max_length=UPSTREAM_MAX_LENGTH)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
    for query, expected in zip(LONG_QUERIES, cut, strict=True):
        max_length = crossrank_max_length(tokenizer, query, UPSTREAM_MAX_LENGTH)
        assert _first_window_score(reranker, query, LONG_DOC, max_length) == pytest.approx(expected, abs=1e-4)
