"""Casting a checkpoint to another precision a slice at a time: transformers' own model, less memory."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from conftest import build_tiny_xlmr, subprocess_env
from crossrank import Reranker
from crossrank.backends import weights
from crossrank.backends.weights import cast_state_dict

pytestmark = pytest.mark.slow  # builds and loads models


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, xlmr_tokenizer_dir: Path, m3_config: dict[str, object]) -> Path:
    return build_tiny_xlmr(tmp_path_factory.mktemp("cast") / "tiny", xlmr_tokenizer_dir, m3_config, seed=11)


def _same_model(ours: torch.nn.Module, theirs: torch.nn.Module) -> None:
    mine, reference = ours.state_dict(), theirs.state_dict()
    assert mine.keys() == reference.keys()
    for name, tensor in reference.items():
        assert mine[name].dtype == tensor.dtype, name
        assert torch.equal(mine[name], tensor), name


def test_a_float32_checkpoint_loads_as_transformers_own_bfloat16_model(
    tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(weights, "_SLICE_BYTES", 4096)  # many slices even on a tiny model
    cast = cast_state_dict(tiny, torch.bfloat16)
    assert cast is not None and {t.dtype for t in cast.values() if t.is_floating_point()} == {torch.bfloat16}
    reference = AutoModelForSequenceClassification.from_pretrained(tiny, dtype=torch.bfloat16)
    with Reranker(str(tiny), device="cpu", dtype="bfloat16") as reranker:
        _same_model(reranker.scorer.backend._model, reference)  # type: ignore[attr-defined]


def test_a_bfloat16_decoder_loads_as_transformers_own_float32_model(tiny_qwen3_dir: Path) -> None:
    """The decoder path (a causal LM, its head tied to the embeddings) builds the same model too."""
    reference = AutoModelForCausalLM.from_pretrained(tiny_qwen3_dir, dtype=torch.float32)
    with Reranker(str(tiny_qwen3_dir), device="cpu", dtype="float32") as reranker:
        _same_model(reranker.scorer.backend._model, reference)  # type: ignore[attr-defined]


def test_a_sharded_checkpoint_is_cast_shard_by_shard(tiny: Path, tmp_path: Path) -> None:
    sharded = tmp_path / "sharded"
    AutoModelForSequenceClassification.from_pretrained(tiny).save_pretrained(sharded, max_shard_size="200KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    cast, whole = cast_state_dict(sharded, torch.bfloat16), cast_state_dict(tiny, torch.bfloat16)
    assert cast is not None and whole is not None and cast.keys() == whole.keys()
    assert all(torch.equal(cast[name], whole[name]) for name in whole)


def test_nothing_to_gain_or_nothing_readable_is_left_to_transformers(tiny: Path, tmp_path: Path) -> None:
    assert cast_state_dict(tiny, torch.float32) is None  # stored in float32: mapped without a copy
    stored_bf16 = tmp_path / "bf16"
    AutoModelForSequenceClassification.from_pretrained(tiny, dtype=torch.bfloat16).save_pretrained(stored_bf16)
    assert cast_state_dict(stored_bf16, torch.bfloat16) is None
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(tiny / "config.json", pickled)
    assert cast_state_dict(pickled, torch.bfloat16) is None  # no safetensors: from_pretrained decides
    broken = tmp_path / "broken"
    shutil.copytree(tiny, broken)
    (broken / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    assert cast_state_dict(broken, torch.bfloat16) is None  # from_pretrained's error names the damage


@pytest.mark.serial  # a memory bound: alone on the machine (tests/run.py)
def test_loading_in_bfloat16_holds_the_copy_not_the_float32_file(
    tmp_path: Path, xlmr_tokenizer_dir: Path, m3_config: dict[str, object]
) -> None:
    """Peak memory of a bfloat16 load from float32 weights: about the bfloat16 copy, not the file beside it."""
    from crossrank.backends.synthetic import build_random_model

    shape = {"num_hidden_layers": 4, "hidden_size": 256, "num_attention_heads": 4, "intermediate_size": 1024}
    model_dir = build_random_model(tmp_path / "model", xlmr_tokenizer_dir, {**m3_config, **shape})
    float32_bytes = (model_dir / "model.safetensors").stat().st_size
    script = f"""
import json
from pathlib import Path
import transformers.models.xlm_roberta.modeling_xlm_roberta  # its import is not the load's memory
from crossrank.backends import weights
from crossrank.backends.torch import TorchBackend
from crossrank.config import RuntimeOptions
weights._SLICE_BYTES = 4 << 20
before = int(open("/proc/self/statm").read().split()[1]) * 4096
runtime = RuntimeOptions(device="cpu", dtype="bfloat16")
backend = TorchBackend(Path({str(model_dir)!r}), runtime=runtime, allow_pickle=False, trust_remote_code=False)
# VmHWM, not ru_maxrss: a child's ru_maxrss keeps the RSS its parent had when it forked.
peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({{"before": before, "peak": peak}}))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=subprocess_env(), timeout=300, check=False
    )
    assert out.returncode == 0, out.stderr
    memory = json.loads(out.stdout.splitlines()[-1])
    grown = memory["peak"] - memory["before"]
    # The bfloat16 copy is half the file; transformers' own cast from the mapped file held all of it besides.
    assert grown < 0.85 * float32_bytes, (grown, float32_bytes)
