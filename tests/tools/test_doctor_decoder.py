"""`crossrank doctor` on decoder (LLM) rerankers: the family, its score head and instruction, and a live smoke test."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from crossrank.cli import app
from crossrank.families import FAMILIES
from crossrank.models.verify import Check
from crossrank.tools.doctor import run_doctor


def _model_checks(model: Path, **options: object) -> dict[str, Check]:
    report = run_doctor(model=str(model), environ={}, network=False, device="cpu", **options)  # type: ignore[arg-type]
    return {c.name: c for c in report.checks if c.name.startswith(("model", "smoke"))}


@pytest.mark.slow
def test_doctor_names_a_qwen3_rerankers_family_and_scores_with_it_in_float32_on_cpu(tiny_qwen3_dir: Path) -> None:
    checks = _model_checks(tiny_qwen3_dir)
    family = checks["model family"]
    assert family.status == "ok"
    assert family.detail.startswith("qwen3-reranker, a decoder (LLM) reranker as in Qwen3-Reranker's model card")
    assert "default instruction 'Given a web search query, retrieve relevant passages that answer the query'" in (
        family.detail
    )
    assert "run natively (no code from the checkpoint)" in family.detail
    assert checks["model score head"].status == "ok"
    assert "logit('yes') - logit('no')" in checks["model score head"].detail
    smoke = checks["smoke"]
    # A random tiny model may rank the two pairs either way (a warning then); it loads and scores either way.
    assert smoke.status in {"ok", "warn"}, smoke
    # dtype="auto" on CPU keeps a decoder in float32: no reduced precision is gated for its family, none is timed.
    assert "on cpu float32 (not gated) by dtype='auto'; 2 pairs in" in smoke.detail


def test_doctor_a_renamed_fine_tune_fails_until_its_family_is_given(tiny_qwen3_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "my-finetune"
    shutil.copytree(tiny_qwen3_dir, folder)
    unnamed = _model_checks(folder, smoke=False)
    assert unnamed["model format"].status == "fail"
    assert "matches no reranker family" in unnamed["model format"].detail
    assert "model family" not in unnamed
    named = _model_checks(folder, smoke=False, family="qwen3-reranker")
    assert named["model format"].status == "ok"
    assert named["model family"].detail.startswith("qwen3-reranker, a decoder")
    assert "smoke" not in named


def test_doctor_and_verify_take_the_family_flag() -> None:
    for command in ("doctor", "verify"):
        result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0
        assert "--family" in result.output


@pytest.mark.parametrize(
    ("family", "expected"),
    [
        ("cross-encoder", "cross-encoder: the tokenizer's own pair template and the model's one-label classification"),
        ("bge-reranker-gemma", 'default instruction "Given a query A and a passage B, determine whether'),
        ("mxbai-rerank-v2", "no instruction by default (--instruction); run natively"),
        ("bge-reranker-minicpm-layerwise", "run natively (no code from the checkpoint)"),
    ],
)
def test_each_family_is_described_by_how_it_scores(family: str, expected: str) -> None:
    from crossrank.tools.doctor import _describe

    assert expected in _describe(FAMILIES[family])
