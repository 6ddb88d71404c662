"""`crossrank verify` on decoder (LLM) rerankers: a folder of a known family verifies with its score head, a language
model of no family is named as such, and a broken score head (tokens, weights) is found without loading the model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from tests.fake_hub import FakeHub, FakeRepo, serve
from tokenizers import Tokenizer
from typer.testing import CliRunner

from crossrank.cli import app
from crossrank.models.download import download_model
from crossrank.models.verify import Check, verify_model

runner = CliRunner()


def _check(checks: list[Check], name: str) -> Check:
    return next(c for c in checks if c.name == name)


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def _edit_config(folder: Path, **changes: object) -> None:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))


def test_a_qwen3_reranker_folder_verifies_with_its_score_tokens(tiny_qwen3_dir: Path) -> None:
    report = verify_model(tiny_qwen3_dir)
    assert [c.name for c in report.checks] == ["format", "checksums", "shapes", "tokenizer", "score head"]
    assert report.status == "warn"  # only: no manifest to compare the bytes with
    assert report.family is not None
    assert report.family.name == "qwen3-reranker"
    assert _check(report.checks, "checksums").status == "warn"
    assert "family qwen3-reranker" in _check(report.checks, "format").detail
    assert "(embedding matrix: " in _check(report.checks, "tokenizer").detail  # a decoder's embed_tokens table
    head = _check(report.checks, "score head")
    tokenizer = Tokenizer.from_file(str(tiny_qwen3_dir / "tokenizer.json"))
    assert head.status == "ok"
    assert "logit('yes') - logit('no') at the last position" in head.detail
    assert f"'yes' = id {tokenizer.token_to_id('yes')}, 'no' = id {tokenizer.token_to_id('no')}" in head.detail
    assert "tied to the token embeddings" in head.detail


def test_a_language_model_of_no_family_is_named_with_the_families_and_the_flag(
    tiny_qwen3_dir: Path, tmp_path: Path
) -> None:
    folder = _copy(tiny_qwen3_dir, tmp_path / "my-finetune")  # the name no longer says Qwen3-Reranker
    result = runner.invoke(app, ["verify", str(folder), "--json"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    # The JSON report: a table would wrap the message at the terminal's width, around a long temporary path.
    text = " ".join(json.dumps(json.loads(result.output)).split())
    assert "Qwen3ForCausalLM (a language model) that matches no reranker family" in text
    for family in ("bge-reranker-gemma", "bge-reranker-minicpm-layerwise", "qwen3-reranker", "mxbai-rerank-v2"):
        assert family in text
    assert "--family" in text
    assert verify_model(folder).family is None
    named = runner.invoke(app, ["verify", str(folder), "--family", "qwen3-reranker", "--json"])
    assert named.exit_code == 1, named.output  # a warning only: no manifest
    checks = {c["name"]: c for c in json.loads(named.output)["checks"]}
    assert checks["score head"]["status"] == "ok"


def test_a_tokenizer_that_splits_the_score_token_is_flagged(tiny_qwen3_dir: Path, tmp_path: Path) -> None:
    from tokenizers import models, pre_tokenizers, trainers

    folder = _copy(tiny_qwen3_dir, tmp_path / "Qwen3-Reranker-other-tokenizer")
    other = Tokenizer(models.BPE())
    other.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    other.train_from_iterator(["the quick brown fox jumps over the lazy dog"] * 4, trainer)
    other.save(str(folder / "tokenizer.json"))
    head = _check(verify_model(folder).checks, "score head")
    assert head.status == "warn"
    assert "'yes' is 3 tokens in this tokenizer" in head.detail


def test_a_score_token_past_the_weights_token_table_fails(tiny_qwen3_dir: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_qwen3_dir, tmp_path / "Qwen3-Reranker-small-table")
    yes = Tokenizer.from_file(str(folder / "tokenizer.json")).token_to_id("yes")
    tensors = load_file(str(folder / "model.safetensors"))
    tensors["model.embed_tokens.weight"] = tensors["model.embed_tokens.weight"][:yes].copy()
    save_file(tensors, str(folder / "model.safetensors"))
    _edit_config(folder, vocab_size=yes)
    checks = verify_model(folder).checks
    assert _check(checks, "tokenizer").status == "fail"  # the tokenizer is larger than the table
    head = _check(checks, "score head")
    assert (head.status, head.error) == ("fail", "UnsupportedModelError")
    assert f"the score token 'yes' is id {yes}, past the {yes:,} rows of the weights" in head.detail


def test_an_untied_model_without_its_lm_head_fails(tiny_qwen3_dir: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_qwen3_dir, tmp_path / "Qwen3-Reranker-headless")
    _edit_config(folder, tie_word_embeddings=False)  # the weights hold no lm_head.weight of their own
    head = _check(verify_model(folder).checks, "score head")
    assert (head.status, head.error) == ("fail", "UnsupportedModelError")
    assert "no language-model head" in head.detail


def test_a_token_table_of_another_size_than_config_json_fails(tiny_qwen3_dir: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_qwen3_dir, tmp_path / "Qwen3-Reranker-mixed")
    _edit_config(folder, vocab_size=9999)
    shapes = _check(verify_model(folder).checks, "shapes")
    assert shapes.status == "fail"
    assert "model.embed_tokens.weight is [487, 64] but config.json vocab_size x hidden_size is [9999, 64]" in (
        shapes.detail
    )


def _layerwise(folder: Path, tokenizer_dir: Path, *, heads: range) -> Path:
    """A layer-wise MiniCPM checkpoint's files (config with auto_map, no code; weights' names and shapes only)."""
    folder.mkdir()
    shutil.copy(tokenizer_dir / "tokenizer.json", folder)
    shutil.copy(tokenizer_dir / "tokenizer_config.json", folder)
    vocab, hidden = len(json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]), 8
    config = {
        "architectures": ["LayerWiseMiniCPMForCausalLM"],
        "auto_map": {"AutoModelForCausalLM": "modeling_minicpm_reranker.LayerWiseMiniCPMForCausalLM"},
        "model_type": "minicpm",
        "hidden_size": hidden,
        "num_hidden_layers": 28,
        "start_layer": 26,
        "vocab_size": vocab,
        "max_position_embeddings": 2048,
        "tie_word_embeddings": True,
    }
    (folder / "config.json").write_text(json.dumps(config))
    tensors = {"model.embed_tokens.weight": np.zeros((vocab, hidden), np.float32)}
    tensors |= {f"lm_head.{i - 26}.linear_head.weight": np.zeros((1, hidden), np.float32) for i in heads}
    save_file(tensors, str(folder / "model.safetensors"))
    return folder


def test_a_layerwise_checkpoint_is_recognised_without_its_code(tiny_qwen3_dir: Path, tmp_path: Path) -> None:
    folder = _layerwise(tmp_path / "checkpoint", tiny_qwen3_dir, heads=range(26, 29))
    report = verify_model(folder)
    assert "LayerWiseMiniCPMForCausalLM (minicpm), family bge-reranker-minicpm-layerwise" in report.checks[0].detail
    head = _check(report.checks, "score head")
    assert head.status == "ok", head
    assert "a cutoff layer's own score head at the last position (heads for layers 26-28; default 28)" in head.detail
    assert not list(folder.glob("*.py"))  # nothing to run: verify reads names, headers and the tokenizer


def test_a_layerwise_checkpoint_without_the_default_layers_head_fails(tiny_qwen3_dir: Path, tmp_path: Path) -> None:
    folder = _layerwise(tmp_path / "bge-reranker-v2-minicpm-layerwise", tiny_qwen3_dir, heads=range(26, 28))
    head = _check(verify_model(folder).checks, "score head")
    assert (head.status, head.error) == ("fail", "UnsupportedModelError")
    assert "no score head for layer 28, the last (lm_head.2.linear_head.weight); its weights hold heads for " in (
        head.detail
    )
    assert head.detail.endswith("layers 26-27")


@pytest.mark.parametrize("family", ["qwen3-reranker", "mxbai-rerank-v2"])
def test_each_family_reads_its_own_tokens(tiny_qwen3_dir: Path, tmp_path: Path, family: str) -> None:
    folder = _copy(tiny_qwen3_dir, tmp_path / "renamed")
    head = _check(verify_model(folder, family=family).checks, "score head")
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    positive, negative = ("yes", "no") if family == "qwen3-reranker" else ("1", "0")
    assert head.status == "ok", head
    assert (
        f"{positive!r} = id {tokenizer.token_to_id(positive)}, {negative!r} = id {tokenizer.token_to_id(negative)}"
        in (head.detail)
    )


def _hub_repo(model_dir: Path) -> dict[str, bytes]:
    """A decoder reranker's hub repository as Qwen's look: sharded weights and their index, the tokenizer in every
    form, and files inference does not need."""
    files = {
        name: (model_dir / name).read_bytes() for name in ("config.json", "tokenizer.json", "tokenizer_config.json")
    }
    tensors = load_file(str(model_dir / "model.safetensors"))
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    weight_map: dict[str, str] = {}
    for shard, held in shards.items():
        shard_file = model_dir.parent / shard
        save_file({name: tensors[name] for name in held}, str(shard_file), metadata={"format": "pt"})
        files[shard] = shard_file.read_bytes()
        weight_map |= dict.fromkeys(held, shard)
    index = {"metadata": {"total_size": sum(t.nbytes for t in tensors.values())}, "weight_map": weight_map}
    files["model.safetensors.index.json"] = json.dumps(index).encode()
    bpe = json.loads(files["tokenizer.json"])["model"]
    files["vocab.json"] = json.dumps(bpe["vocab"]).encode()
    files["merges.txt"] = "\n".join(" ".join(pair) for pair in bpe["merges"]).encode()
    files["special_tokens_map.json"] = json.dumps({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}).encode()
    unneeded = {
        "generation_config.json": b'{"do_sample": true, "temperature": 0.6}',
        "chat_template.jinja": b"{{ messages }}",
        "README.md": b"# a reranker",
        ".gitattributes": b"*.safetensors filter=lfs",
        "modeling_custom.py": b"raise SystemExit",
        "optimizer.pt": b"\0" * 64,
        "onnx/model.onnx": b"\0" * 64,
    }
    return files | unneeded


def test_fake_hub_a_decoder_reranker_download_fetches_what_inference_needs_and_verifies(
    tiny_qwen3_dir: Path, tmp_path: Path
) -> None:
    source = _copy(tiny_qwen3_dir, tmp_path / "source" / "model")
    hub = FakeHub(repos={"org/Qwen3-Reranker-tiny": FakeRepo(commit="c" * 40, files=_hub_repo(source))})
    server = serve(hub)
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        result = download_model("org/Qwen3-Reranker-tiny", cache_dir=str(tmp_path / "cache"), endpoint=endpoint)
    finally:
        server.shutdown()
        server.server_close()
    fetched = {path.rsplit("/", 1)[-1] for method, path, _ in hub.requests if method == "GET" and "/resolve/" in path}
    needed = {
        "config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.json",
        "merges.txt",
        "special_tokens_map.json",
    }
    assert fetched == needed  # not generation_config.json, the chat template, code, optimizer states or ONNX
    assert set(result.manifest.files) == needed
    report = verify_model(result.folder)  # the hub cache's folder: its repository name says the family
    assert [(c.name, c.status) for c in report.checks] == [
        ("format", "ok"),
        ("checksums", "ok"),
        ("shapes", "ok"),
        ("tokenizer", "ok"),
        ("score head", "ok"),
    ]
    assert "family qwen3-reranker" in report.checks[0].detail
