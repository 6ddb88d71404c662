"""Broken model folders, fabricated from the real English cross-encoder, each give their own error and fix."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from crossrank import Reranker
from crossrank.errors import (
    CrossrankError,
    IncompleteModelError,
    IntegrityError,
    UnsupportedModelError,
    WeightsFormatError,
)
from crossrank.models.info import read_model_info
from crossrank.models.integrity import MANIFEST_NAME, write_manifest
from crossrank.models.verify import verify_model

SMALL_FILES = ("config.json", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt")


@pytest.fixture
def model_copy(tmp_path: Path, english_model_dir: Path) -> Path:
    """A copy of the real model whose small files can be edited; the weights are a link unless a test replaces them."""
    folder = tmp_path / "model"
    folder.mkdir()
    for name in SMALL_FILES:
        shutil.copy(english_model_dir / name, folder / name)
    (folder / "model.safetensors").symlink_to(english_model_dir / "model.safetensors")
    return folder


def _replace_weights(folder: Path, data: bytes) -> None:
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors").write_bytes(data)


def _edit_config(folder: Path, **changes: object) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def _raises(folder: Path, error: type[CrossrankError], message: str, fix: str, **kwargs: bool) -> CrossrankError:
    with pytest.raises(error) as caught:
        read_model_info(folder, **kwargs)
    assert message in caught.value.message
    assert caught.value.fix is not None
    assert fix in caught.value.fix
    return caught.value


def test_the_intact_copy_passes_every_check(model_copy: Path) -> None:
    assert read_model_info(model_copy).weights == "safetensors"
    report = verify_model(model_copy)
    assert [c.name for c in report.checks] == ["format", "checksums", "shapes", "tokenizer"]
    assert {c.name: c.status for c in report.checks} == {
        "format": "ok",
        "checksums": "warn",  # no manifest: nothing to compare with
        "shapes": "ok",
        "tokenizer": "ok",
    }


def test_truncated_safetensors_is_a_partial_download(model_copy: Path, english_model_dir: Path) -> None:
    full = (english_model_dir / "model.safetensors").read_bytes()
    _replace_weights(model_copy, full[: len(full) // 2])
    error = _raises(model_copy, IncompleteModelError, "is truncated: 45,433,206 of 90,866,412 bytes", "download")
    assert isinstance(error, IntegrityError)
    # The façade raises the same error before any weight is read.
    with pytest.raises(IncompleteModelError, match="truncated"):
        Reranker(str(model_copy), device="cpu")
    assert verify_model(model_copy).checks[0].error == "IncompleteModelError"


def test_truncated_inside_the_header(model_copy: Path, english_model_dir: Path) -> None:
    _replace_weights(model_copy, (english_model_dir / "model.safetensors").read_bytes()[:5000])
    _raises(model_copy, IncompleteModelError, "but its header alone is 12,008 bytes", "download")


def test_flipped_header_bytes_are_corruption(model_copy: Path, english_model_dir: Path) -> None:
    data = bytearray((english_model_dir / "model.safetensors").read_bytes())
    data[20:24] = b"\xff\xfe\xfd\xfc"
    _replace_weights(model_copy, bytes(data))
    error = _raises(model_copy, IntegrityError, "is corrupt: its header is not valid JSON", "download the model again")
    assert not isinstance(error, IncompleteModelError)


def test_flipped_data_bytes_fail_the_manifest_checksum(model_copy: Path, english_model_dir: Path) -> None:
    data = bytearray((english_model_dir / "model.safetensors").read_bytes())
    _replace_weights(model_copy, bytes(data))
    write_manifest(model_copy, repo_id="org/minilm", revision="main", commit="c" * 40)
    assert verify_model(model_copy).status == "ok"
    data[50_000_000] ^= 0xFF  # one weight's bits change; sizes and headers stay valid
    _replace_weights(model_copy, bytes(data))
    assert read_model_info(model_copy).weights == "safetensors"  # the cheap checks cannot see it
    report = verify_model(model_copy)
    checksums = next(c for c in report.checks if c.name == "checksums")
    assert report.status == "fail"
    assert checksums.status == "fail"
    assert checksums.error == "IntegrityError"
    assert "model.safetensors has a different sha256" in checksums.detail
    assert checksums.fix == "download the model again: crossrank download org/minilm --dir " + str(model_copy)


def test_missing_tokenizer(model_copy: Path) -> None:
    for name in ("tokenizer.json", "vocab.txt"):
        (model_copy / name).unlink()
    _raises(model_copy, IncompleteModelError, "has no tokenizer", "download the model's tokenizer files")


def test_tokenizer_of_another_model_fails_verify(model_copy: Path, xlmr_tokenizer_dir: Path) -> None:
    shutil.copy(xlmr_tokenizer_dir / "tokenizer.json", model_copy / "tokenizer.json")
    check = next(c for c in verify_model(model_copy).checks if c.name == "tokenizer")
    assert check.status == "fail"
    assert "250,002 tokens but the embedding matrix only 30,522 rows" in check.detail


def test_pickle_only_is_refused_unless_allowed(model_copy: Path, english_model_dir: Path) -> None:
    import torch
    from safetensors.torch import load_file as load_torch

    (model_copy / "model.safetensors").unlink()
    torch.save(load_torch(english_model_dir / "model.safetensors"), model_copy / "pytorch_model.bin")
    _raises(model_copy, WeightsFormatError, "only pickle weights", "allow_pickle=True")
    assert read_model_info(model_copy, allow_pickle=True).weights == "pickle"


@pytest.mark.parametrize(
    ("make", "message", "fix"),
    [
        pytest.param(
            lambda f: [(f / "saved_model.pb").write_bytes(b"\x08\x01"), (f / "variables").mkdir()],
            "is a TensorFlow SavedModel (saved_model.pb + variables/)",
            "safetensors",
            id="savedmodel",
        ),
        pytest.param(
            lambda f: (f / "tf_model.h5").write_bytes(b"\x89HDF\r\n\x1a\n"),
            "holds Keras/TensorFlow weights (tf_model.h5)",
            "safetensors",
            id="h5",
        ),
        pytest.param(
            lambda f: (f / "model.keras").write_bytes(b"PK\x03\x04"),
            "holds Keras/TensorFlow weights (model.keras)",
            "safetensors",
            id="keras",
        ),
        pytest.param(
            lambda f: (f / "model-q8_0.gguf").write_bytes(b"GGUF"),
            "holds GGUF weights (model-q8_0.gguf)",
            "original safetensors release",
            id="gguf",
        ),
        pytest.param(
            lambda f: [(f / "onnx").mkdir(), (f / "onnx" / "model.onnx").write_bytes(b"\x08\x07")],
            "holds only ONNX weights (onnx/model.onnx)",
            "crossrank download",
            id="onnx",
        ),
    ],
)
def test_foreign_formats_are_named(model_copy: Path, make: Callable[[Path], object], message: str, fix: str) -> None:
    (model_copy / "model.safetensors").unlink()
    make(model_copy)
    _raises(model_copy, WeightsFormatError, message, fix)


def test_savedmodel_without_config_is_named_not_just_missing(tmp_path: Path) -> None:
    (tmp_path / "saved_model.pb").write_bytes(b"\x08\x01")
    (tmp_path / "variables").mkdir()
    (tmp_path / "variables" / "variables.index").write_bytes(b"")
    _raises(tmp_path, WeightsFormatError, "TensorFlow SavedModel", "safetensors")


def test_embedding_model_config_is_refused(model_copy: Path) -> None:
    _edit_config(model_copy, architectures=["BertModel"])
    _raises(model_copy, UnsupportedModelError, "is a BertModel, not a cross-encoder", "use a reranker")


def test_weights_without_classification_head_are_refused(model_copy: Path, english_model_dir: Path) -> None:
    weights = load_file(english_model_dir / "model.safetensors")
    body = {k: v for k, v in weights.items() if not k.startswith("classifier.")}
    (model_copy / "model.safetensors").unlink()
    save_file(body, model_copy / "model.safetensors", metadata={"format": "pt"})
    error = _raises(model_copy, UnsupportedModelError, "have no classification head", "trained reranker")
    assert not isinstance(error, WeightsFormatError)


def test_two_label_classifier_is_refused(model_copy: Path) -> None:
    _edit_config(model_copy, id2label={"0": "NO", "1": "YES"}, label2id={"NO": 0, "YES": 1})
    _raises(model_copy, UnsupportedModelError, "has 2 output labels", "num_labels: 1")


def test_config_and_weights_from_different_models(model_copy: Path) -> None:
    _edit_config(model_copy, vocab_size=250002)
    _raises(model_copy, IntegrityError, "word embeddings are [30522, 384] but config.json says", "different models")


def test_leftover_incomplete_file_is_an_interrupted_download(model_copy: Path) -> None:
    (model_copy / "model.safetensors.a1b2c3d4.incomplete").write_bytes(b"\0" * 100)
    _raises(model_copy, IncompleteModelError, "partly downloaded file(s)", "it resumes")


def test_missing_shard_is_an_interrupted_download(model_copy: Path, english_model_dir: Path) -> None:
    weights = load_file(english_model_dir / "model.safetensors")
    names = sorted(weights)
    (model_copy / "model.safetensors").unlink()
    save_file({k: weights[k] for k in names[:50]}, model_copy / "model-00001-of-00002.safetensors")
    index = {"weight_map": {k: f"model-0000{1 + (i >= 50)}-of-00002.safetensors" for i, k in enumerate(names)}}
    (model_copy / "model.safetensors.index.json").write_text(json.dumps(index))
    _raises(model_copy, IncompleteModelError, "missing 1 of 2 weight shards", "finish the download")
    save_file({k: weights[k] for k in names[50:]}, model_copy / "model-00002-of-00002.safetensors")
    assert read_model_info(model_copy).weights == "safetensors"
    assert np.array_equal(load_file(model_copy / "model-00002-of-00002.safetensors")[names[60]], weights[names[60]])


def test_a_shard_index_naming_files_outside_the_folder_is_refused(model_copy: Path, tmp_path: Path) -> None:
    # The index comes with a downloaded folder: it must not make the loader read weights from elsewhere.
    outside = tmp_path / "elsewhere.safetensors"
    outside.write_bytes(b"not read")
    (model_copy / "model.safetensors").unlink()
    for name in ("../elsewhere.safetensors", str(outside)):
        (model_copy / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": name}}))
        error = _raises(model_copy, IntegrityError, "names weight shards outside the model folder", "source you trust")
        assert name in error.message


def test_a_manifest_naming_files_outside_the_folder_fails_verify(model_copy: Path, tmp_path: Path) -> None:
    write_manifest(model_copy, repo_id="org/minilm", revision=None, commit=None)
    manifest = json.loads((model_copy / MANIFEST_NAME).read_text())
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # reading it would hang verify: it must not be opened
    manifest["files"]["../../etc/passwd"] = {"size": 1, "sha256": "0" * 64}
    manifest["files"][str(fifo)] = {"size": 1, "sha256": "0" * 64}
    (model_copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    checksums = next(c for c in verify_model(model_copy).checks if c.name == "checksums")
    assert checksums.status == "fail"
    assert "'../../etc/passwd' is not a file of the model folder" in checksums.detail
    assert f"{str(fifo)!r} is not a file of the model folder" in checksums.detail


def test_manifest_is_not_listed_in_itself(model_copy: Path) -> None:
    manifest = write_manifest(model_copy, repo_id="org/minilm", revision=None, commit=None)
    assert MANIFEST_NAME not in manifest.files
    assert set(manifest.files) == {*SMALL_FILES, "model.safetensors"}


def test_verify_command_exit_code_and_json(model_copy: Path, english_model_dir: Path) -> None:
    from typer.testing import CliRunner

    from crossrank.cli import app

    ok = CliRunner().invoke(app, ["verify", str(model_copy), "--json"])
    assert ok.exit_code == 1  # only a warning: no manifest to compare with
    assert json.loads(ok.stdout)["status"] == "warn"
    full = (english_model_dir / "model.safetensors").read_bytes()
    _replace_weights(model_copy, full[:-1])
    broken = CliRunner().invoke(app, ["verify", str(model_copy), "--json"])
    assert broken.exit_code == 2
    (check,) = json.loads(broken.stdout)["checks"]
    assert check["error"] == "IncompleteModelError"
    assert "is truncated: 90,866,411 of 90,866,412 bytes" in check["detail"]


def test_a_model_shipping_its_own_code_is_refused_and_the_code_never_runs(model_copy: Path, tmp_path: Path) -> None:
    # config.json points at Python in the folder (auto_map); running it needs trust_remote_code=True.
    marker = tmp_path / "the-model-code-ran"
    (model_copy / "custom_model.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    _edit_config(
        model_copy,
        model_type="custom-cross-encoder",
        auto_map={
            "AutoConfig": "custom_model.CustomConfig",
            "AutoModelForSequenceClassification": "custom_model.CustomModel",
        },
    )
    with pytest.raises(CrossrankError) as caught:
        Reranker(str(model_copy), device="cpu")
    assert "trust_remote_code" in f"{caught.value.message} {caught.value.fix}"
    assert not marker.exists()
