"""OOM recovery and precision safety of TorchBackend.

There is no GPU here, so out-of-memory comes from a fake: ``FakeOOMTorchBackend`` is the real
TorchBackend whose forward pass on its main model raises torch's real ``OutOfMemoryError`` for
batches above a size, exactly as CUDA does. Every score is compared with a plain TorchBackend run.
The overflow test is real: a model whose head overflows float16, run in float16 on CPU.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer

from crossrank.backends.base import EncodedBatch
from crossrank.backends.gpu import GpuProcess, describe_processes
from crossrank.backends.torch import TorchBackend
from crossrank.config import RuntimeOptions
from crossrank.errors import DeviceMemoryError

pytestmark = pytest.mark.slow

PAIRS = [
    ("what is a panda?", "The giant panda is a bear species endemic to China."),
    ("what is a panda?", "hi"),
    ("how many people live in berlin", "Berlin has a population of 3.5 million people."),
    ("how many people live in berlin", "Paris is the capital of France, a country in western Europe with many cities."),
    ("capital of france", "Paris"),
    ("capital of france", "The Eiffel Tower is in Paris, the capital and largest city of France."),
    ("python", "Python is a programming language that lets you work quickly."),
]


def encode(model_dir: Path, pairs: list[tuple[str, str]]) -> EncodedBatch:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    enc = tokenizer([q for q, _ in pairs], [d for _, d in pairs], padding=True, return_tensors="np")
    token_types = enc.get("token_type_ids")
    return EncodedBatch(
        input_ids=enc["input_ids"].astype(np.int64),
        attention_mask=enc["attention_mask"].astype(np.int64),
        token_type_ids=None if token_types is None else token_types.astype(np.int64),
    )


class FakeOOMTorchBackend(TorchBackend):
    """TorchBackend whose main model "runs out of memory" (torch's real OutOfMemoryError) above ``max_rows`` pairs."""

    def __init__(self, model_dir: Path, *, max_rows: int, fallback: str = "none") -> None:
        super().__init__(
            model_dir,
            runtime=RuntimeOptions(device="cpu", fallback=fallback),
            allow_pickle=False,
            trust_remote_code=False,
        )
        self.max_rows = max_rows
        self.sizes_run: list[int] = []

    def _run(self, model: Any, device: torch.device, batch: EncodedBatch) -> npt.NDArray[np.float32]:
        if model is self._model and batch.size > self.max_rows:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate 2.00 GiB (fake, {batch.size} pairs)")
        self.sizes_run.append(batch.size)
        return super()._run(model, device, batch)

    def _memory_facts(self) -> str:
        held = (GpuProcess(4242, "vllm", 70 * 2**30), GpuProcess(4343, "python", None))
        return f"0.50 GiB free of 80.0 GiB; held by {describe_processes(held)}"


@pytest.fixture(scope="module")
def plain(english_model_dir: Path) -> TorchBackend:
    return TorchBackend(
        english_model_dir, runtime=RuntimeOptions(device="cpu"), allow_pickle=False, trust_remote_code=False
    )


@pytest.fixture(scope="module")
def batch(english_model_dir: Path) -> EncodedBatch:
    return encode(english_model_dir, PAIRS)


def test_fake_oom_splits_in_halves_and_gives_the_plain_scores(
    english_model_dir: Path, plain: TorchBackend, batch: EncodedBatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeOOMTorchBackend(english_model_dir, max_rows=2)
    with caplog.at_level(logging.WARNING, logger="crossrank.backends.torch"):
        scores = fake.forward(batch)
    np.testing.assert_allclose(scores, plain.forward(batch), atol=1e-5)
    assert max(fake.sizes_run) <= 2
    assert sum(fake.sizes_run) == len(PAIRS)  # every pair scored exactly once
    assert fake.recovery.oom_splits >= 2
    assert "out of memory" in caplog.text
    # The budget was lowered: a later batch is pre-split instead of failing again.
    splits = fake.recovery.oom_splits
    np.testing.assert_allclose(fake.forward(batch), plain.forward(batch), atol=1e-5)
    assert fake.recovery.oom_splits - splits <= 1
    assert fake.recovery.token_budget is not None
    assert fake.recovery.token_budget < batch.input_ids.size


def test_fake_oom_on_one_pair_falls_back_to_cpu_with_the_plain_scores(
    english_model_dir: Path, plain: TorchBackend, batch: EncodedBatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeOOMTorchBackend(english_model_dir, max_rows=0, fallback="cpu")
    with caplog.at_level(logging.WARNING, logger="crossrank.backends.torch"):
        scores = fake.forward(batch)
    np.testing.assert_allclose(scores, plain.forward(batch), atol=1e-5)
    assert fake.recovery.cpu_fallbacks == len(PAIRS)
    assert "fallback='cpu'" in caplog.text


def test_fake_oom_on_one_pair_without_fallback_names_free_memory_and_holders(
    english_model_dir: Path, batch: EncodedBatch
) -> None:
    fake = FakeOOMTorchBackend(english_model_dir, max_rows=0)
    with pytest.raises(DeviceMemoryError) as caught:
        fake.forward(batch)
    message = str(caught.value)
    assert "single pair" in message
    assert "0.50 GiB free of 80.0 GiB" in message
    assert "pid 4242 (vllm) 70.0 GiB" in message
    assert caught.value.fix is not None
    assert "fallback='cpu'" in caught.value.fix
    assert isinstance(caught.value.__cause__, torch.OutOfMemoryError)


@pytest.fixture
def overflowing_dir(tmp_path: Path, tiny_xlmr_dir: Path) -> Path:
    """The tiny XLM-R with its head scaled so its output passes float16's 65504 limit (float32 holds it easily)."""
    model_dir = tmp_path / "overflowing"
    model_dir.mkdir()
    for item in tiny_xlmr_dir.iterdir():
        (model_dir / item.name).write_bytes(item.read_bytes())
    weights = load_file(model_dir / "model.safetensors")
    weights["classifier.out_proj.weight"] = weights["classifier.out_proj.weight"] * 1e7
    save_file(weights, model_dir / "model.safetensors", metadata={"format": "pt"})
    return model_dir


def test_float16_overflow_is_recomputed_in_float32(overflowing_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    model_dir = overflowing_dir
    batch = encode(model_dir, PAIRS[:4])
    options = {"allow_pickle": False, "trust_remote_code": False}
    half = TorchBackend(model_dir, runtime=RuntimeOptions(device="cpu", dtype="float16"), **options)
    full = TorchBackend(model_dir, runtime=RuntimeOptions(device="cpu", dtype="float32"), **options)
    raw = TorchBackend._run(half, half._model, half._device, batch)
    assert not np.isfinite(raw).all(), "the fixture must really overflow in float16"
    with caplog.at_level(logging.WARNING, logger="crossrank.backends.torch"):
        scores = half.forward(batch)
    expected = full.forward(batch)
    assert np.isfinite(scores).all()
    assert np.abs(expected).max() > 65504
    np.testing.assert_allclose(scores, expected, rtol=1e-5)
    assert half.recovery.fp32_recomputes == 1
    assert "bfloat16" in caplog.text


class FakeFullGpuFloat32Backend(TorchBackend):
    """A float16 TorchBackend whose float32 copy sits on a "GPU" (the fake: a device name) that has no room
    for a batch's float32 activations: running there raises torch's real OutOfMemoryError."""

    def _run(self, model: Any, device: torch.device, batch: EncodedBatch) -> npt.NDArray[np.float32]:
        if device.type == "cuda":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB (fake)")
        return super()._run(model, device, batch)


def test_fake_gpu_float32_recompute_out_of_memory_moves_the_copy_to_cpu(
    overflowing_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    options = {"allow_pickle": False, "trust_remote_code": False}
    half = FakeFullGpuFloat32Backend(overflowing_dir, runtime=RuntimeOptions(device="cpu", dtype="float16"), **options)
    half._fp32, half._fp32_device = half._load(torch.float32), torch.device("cuda:0")  # placed "on the GPU"
    full = TorchBackend(overflowing_dir, runtime=RuntimeOptions(device="cpu", dtype="float32"), **options)
    batch = encode(overflowing_dir, PAIRS[:4])
    with caplog.at_level(logging.WARNING, logger="crossrank.backends.torch"):
        scores = half.forward(batch)
    np.testing.assert_allclose(scores, full.forward(batch), rtol=1e-5)
    assert half._fp32_device == torch.device("cpu")
    assert "moving the float32 copy to CPU" in caplog.text
    half.forward(batch)  # later recomputes go to CPU at once
    assert half.recovery.fp32_recomputes == 2
    assert caplog.text.count("moving the float32 copy to CPU") == 1


def test_fake_oom_while_timing_passes_prices_none(english_model_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The full pass timed for min_pass_tokens runs out of memory (the fake): no price, a warning, no failure."""
    backend = FakeOOMTorchBackend(english_model_dir, max_rows=4)
    with caplog.at_level(logging.WARNING, logger="crossrank.backends.torch"):
        assert backend._min_pass_tokens(8192) == 0
    assert "passes not priced" in caplog.text and "out of memory" in caplog.text
    assert FakeOOMTorchBackend(english_model_dir, max_rows=64)._min_pass_tokens(8192) > 0  # 64 x 128 fits
