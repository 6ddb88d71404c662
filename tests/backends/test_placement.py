"""device="auto" placement: the emptiest GPU when the model fits there, else CPU (pure arithmetic, fake GPUs)."""

from __future__ import annotations

from pathlib import Path

from crossrank.backends.placement import GpuMemory, choose_placement, count_parameters, needed_bytes

GIB = 2**30
M3_PARAMETERS = 568_000_000  # bge-reranker-v2-m3


def test_no_gpu_means_cpu_float32() -> None:
    placement = choose_placement("auto", [], M3_PARAMETERS, prefer_bf16=False)
    assert (placement.device, placement.dtype) == ("cpu", "float32")


def test_fake_gpus_the_emptiest_one_is_chosen_in_float16() -> None:
    gpus = [GpuMemory(0, 2 * GIB, True), GpuMemory(1, 30 * GIB, True)]
    placement = choose_placement("auto", gpus, M3_PARAMETERS, prefer_bf16=False)
    assert (placement.device, placement.dtype) == ("cuda:1", "float16")
    assert "30.0 GiB free" in placement.reason


def test_fake_gpu_bfloat16_when_the_model_was_trained_in_it_and_the_gpu_has_it() -> None:
    assert choose_placement("auto", [GpuMemory(0, 30 * GIB, True)], M3_PARAMETERS, prefer_bf16=True).dtype == "bfloat16"
    assert choose_placement("auto", [GpuMemory(0, 30 * GIB, False)], M3_PARAMETERS, prefer_bf16=True).dtype == "float16"


def test_fake_gpu_too_full_falls_back_to_cpu_and_says_why() -> None:
    need = needed_bytes(M3_PARAMETERS, "float16")
    assert 2 * GIB < need < 3 * GIB
    placement = choose_placement("auto", [GpuMemory(0, need - 1, True)], M3_PARAMETERS, prefer_bf16=False)
    assert (placement.device, placement.dtype) == ("cpu", "float32")
    assert "running on CPU" in placement.reason
    exact = choose_placement("auto", [GpuMemory(0, need, True)], M3_PARAMETERS, prefer_bf16=False)
    assert exact.device == "cuda:0"


def test_fake_gpu_explicit_dtype_is_kept_and_sized() -> None:
    need32 = needed_bytes(M3_PARAMETERS, "float32")
    gpu = [GpuMemory(0, need32 - GIB, True)]
    assert choose_placement("float32", gpu, M3_PARAMETERS, prefer_bf16=False).device == "cpu"
    assert choose_placement("float16", gpu, M3_PARAMETERS, prefer_bf16=False).device == "cuda:0"


def test_parameters_are_counted_from_the_real_weights(english_model_dir: Path) -> None:
    # 22.7M parameters stored in float32 (the header and metadata add a few kB).
    assert 22_700_000 <= count_parameters(english_model_dir) <= 22_720_000
