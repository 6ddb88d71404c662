"""Finding and checking model folders: each problem gets its own typed error and fix."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import subprocess_env
from crossrank import IntegrityError, ModelNotFoundError, Reranker, UnsupportedModelError
from crossrank.config import ModelSpec
from crossrank.models.info import read_model_info
from crossrank.models.resolve import resolve_model


@pytest.fixture
def english_copy(tmp_path: Path, english_model_dir: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(english_model_dir, target)
    return target


def _edit_config(folder: Path, **changes: object) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def test_missing_folder_names_the_path_and_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "model"
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model(ModelSpec(name_or_path=str(missing)))
    assert str(missing) in info.value.message
    assert info.value.fix is not None and "hf download" in info.value.fix


def test_a_file_is_not_a_folder(english_model_dir: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="is a file"):
        resolve_model(ModelSpec(name_or_path=str(english_model_dir / "config.json")))


def test_folder_without_config(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"no config\.json"):
        resolve_model(ModelSpec(name_or_path=str(tmp_path)))


def test_broken_config(english_copy: Path) -> None:
    (english_copy / "config.json").write_text("{not json")
    with pytest.raises(IntegrityError, match="not valid JSON"):
        read_model_info(english_copy)


def test_embedding_model_is_refused(english_copy: Path) -> None:
    _edit_config(english_copy, architectures=["BertModel"])
    with pytest.raises(UnsupportedModelError, match="not a cross-encoder") as info:
        read_model_info(english_copy)
    assert info.value.fix is not None and "bge-reranker" in info.value.fix


def test_two_label_classifier_is_refused(english_copy: Path) -> None:
    _edit_config(english_copy, id2label={"0": "NO", "1": "YES"})
    with pytest.raises(UnsupportedModelError, match="2 output labels"):
        read_model_info(english_copy)


def test_no_weights(english_copy: Path) -> None:
    (english_copy / "model.safetensors").unlink()
    with pytest.raises(IntegrityError, match="no model weights") as info:
        read_model_info(english_copy)
    assert "config.json" in info.value.message  # lists what it found


@pytest.mark.slow
def test_pickle_weights_need_an_explicit_opt_in(english_copy: Path) -> None:
    import torch
    from safetensors.torch import load_file

    weights = english_copy / "model.safetensors"
    torch.save(load_file(weights), english_copy / "pytorch_model.bin")
    weights.unlink()
    with pytest.raises(UnsupportedModelError, match="pickle") as info:
        Reranker(str(english_copy))
    assert info.value.fix is not None and "allow_pickle" in info.value.fix
    with Reranker(str(english_copy), allow_pickle=True) as reranker:
        assert reranker.compute_score(("what is panda?", "hi")) == pytest.approx(-6.0386, abs=1e-3)


def test_window_from_the_position_table(fake_model_dir: Path) -> None:
    info = read_model_info(fake_model_dir)  # keeps bge-reranker-v2-m3's 8194 positions
    assert info.max_length == 8192
    assert info.architecture == "XLMRobertaForSequenceClassification"


def _run(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        env=subprocess_env(**env),
        timeout=300,
    )


@pytest.mark.slow
def test_hub_id_from_the_offline_cache(tmp_path: Path, english_model_dir: Path) -> None:
    """A hub id resolves through huggingface_hub's cache layout with HF_HUB_OFFLINE=1 (no hub here)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--acme--tiny-reranker"
    shutil.copytree(english_model_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    code = (
        "from crossrank import Reranker\n"
        "r = Reranker('acme/tiny-reranker', device='cpu', dtype='float32')\n"  # auto may measure bfloat16 faster
        "print(round(r.compute_score(('what is panda?', 'hi')), 3))"
    )
    out = _run(code, {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path), "HF_HUB_CACHE": str(tmp_path / "hub")})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "-6.039"


@pytest.mark.slow
def test_hub_id_missing_offline_says_where_it_looked(tmp_path: Path) -> None:
    code = (
        "from crossrank import Reranker, ModelNotFoundError\n"
        "try:\n    Reranker('acme/absent-reranker')\n"
        "except ModelNotFoundError as e:\n    print(e)\n"
    )
    out = _run(code, {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path), "HF_HUB_CACHE": str(tmp_path / "hub")})
    assert out.returncode == 0, out.stderr
    assert "acme/absent-reranker" in out.stdout
    assert str(tmp_path / "hub") in out.stdout
    assert "HF_HUB_OFFLINE" in out.stdout
    assert "hf download acme/absent-reranker" in out.stdout
