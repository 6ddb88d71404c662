"""Model families: detection from config.json and names, the override, and the errors that name the families."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from crossrank import ConfigError, ModelSpec, PromptOptions, RerankOptions, UnsupportedModelError
from crossrank.config import MAX_INSTRUCTION_CHARS
from crossrank.families import CROSS_ENCODER, FAMILIES, detect_family
from crossrank.fingerprint import score_options
from crossrank.loader import resolve_prompt
from crossrank.models.info import read_model_info

_QWEN3 = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3"}


@pytest.mark.parametrize(
    ("config", "names", "family"),
    [
        ({"architectures": ["XLMRobertaForSequenceClassification"]}, ["BAAI/bge-reranker-v2-m3"], "cross-encoder"),
        (_QWEN3, ["Qwen/Qwen3-Reranker-0.6B"], "qwen3-reranker"),
        (_QWEN3, ["my_qwen3_reranker_finetune"], "qwen3-reranker"),  # "_" and "-" alike, any case
        ({"architectures": ["GemmaForCausalLM"]}, ["BAAI/bge-reranker-v2-gemma"], "bge-reranker-gemma"),
        ({"architectures": ["Qwen2ForCausalLM"]}, ["mixedbread-ai/mxbai-rerank-large-v2"], "mxbai-rerank-v2"),
        ({"architectures": ["LayerWiseMiniCPMForCausalLM"]}, ["renamed"], "bge-reranker-minicpm-layerwise"),
    ],
)
def test_the_family_is_detected_from_the_architecture_and_the_name(
    config: dict[str, object], names: list[str], family: str
) -> None:
    assert detect_family("auto", config, names).name == family


def test_a_language_model_of_no_family_is_refused_with_the_families_named() -> None:
    with pytest.raises(UnsupportedModelError, match=r"Qwen3ForCausalLM.*bge-reranker-gemma.*qwen3-reranker") as caught:
        detect_family("auto", _QWEN3, ["Qwen/Qwen3-0.6B"])
    assert "family=" in (caught.value.fix or "")


def test_an_explicit_family_wins_and_must_fit_the_architecture() -> None:
    assert detect_family("mxbai-rerank-v2", _QWEN3, ["anything"]).name == "mxbai-rerank-v2"
    with pytest.raises(UnsupportedModelError, match="decoder reranker"):
        detect_family("qwen3-reranker", {"architectures": ["BertForSequenceClassification"]}, [])
    with pytest.raises(UnsupportedModelError, match="ForSequenceClassification"):
        detect_family("cross-encoder", _QWEN3, ["Qwen/Qwen3-Reranker-0.6B"])


def test_an_unknown_family_name_is_a_config_error_listing_them() -> None:
    with pytest.raises(ConfigError, match="auto, cross-encoder, bge-reranker-gemma"):
        ModelSpec(family="qwen3")


def test_a_hub_cache_folder_is_named_by_its_repository(tmp_path: Path, tiny_qwen3_dir: Path) -> None:
    snapshot = tmp_path / "models--Qwen--Qwen3-Reranker-4B" / "snapshots" / "0123abcd"
    shutil.copytree(tiny_qwen3_dir, snapshot)
    assert read_model_info(snapshot).family.name == "qwen3-reranker"
    renamed = tmp_path / "plain-folder"
    shutil.copytree(tiny_qwen3_dir, renamed)
    with pytest.raises(UnsupportedModelError, match="matches no reranker family"):
        read_model_info(renamed)
    assert read_model_info(renamed, family="qwen3-reranker").family.name == "qwen3-reranker"
    config = json.loads((renamed / "config.json").read_text())
    assert read_model_info(renamed, family="qwen3-reranker").max_length == config["max_position_embeddings"]


def test_the_instruction_resolves_to_the_family_default_and_is_dropped_for_cross_encoders(
    caplog: pytest.LogCaptureFixture,
) -> None:
    qwen3 = FAMILIES["qwen3-reranker"]
    assert resolve_prompt(qwen3, PromptOptions()).instruction == qwen3.default_instruction
    assert resolve_prompt(qwen3, PromptOptions(instruction="find laws")).instruction == "find laws"
    with caplog.at_level("INFO", logger="crossrank.loader"):
        assert resolve_prompt(CROSS_ENCODER, PromptOptions(instruction="find laws")).instruction is None
    # mxbai-rerank-v2 has no default instruction, but takes one: "" is its default (no instruction line).
    assert resolve_prompt(FAMILIES["mxbai-rerank-v2"], PromptOptions()).instruction == ""


def test_a_call_overrides_the_instruction_and_only_a_set_one_enters_the_fingerprint() -> None:
    from crossrank import ChunkingOptions, TruncationOptions

    truncation, chunking, prompt = RerankOptions(instruction="x").apply(
        TruncationOptions(), ChunkingOptions(), PromptOptions(instruction="y")
    )
    assert prompt.instruction == "x"
    assert "instruction" not in score_options(truncation, chunking, PromptOptions())
    assert score_options(truncation, chunking, prompt)["instruction"] == "x"


def test_an_instruction_over_its_limit_is_refused() -> None:
    with pytest.raises(ConfigError, match=f"at most {MAX_INSTRUCTION_CHARS}"):
        PromptOptions(instruction="x" * (MAX_INSTRUCTION_CHARS + 1))
