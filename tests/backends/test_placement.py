"""device="auto" placement (the emptiest GPU when the model fits there, else CPU) and the GPU token budget.

Pure arithmetic on fake GPUs' numbers; the activation estimate behind the budget is checked against the
peak activation memory of a real forward pass on CPU.
"""

from __future__ import annotations

import dataclasses
import json
import weakref
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from conftest import m3_width_encoder
from crossrank.backends.placement import (
    GPU_MAX_BATCH_TOKENS,
    GpuMemory,
    activation_bytes_per_token,
    choose_placement,
    count_parameters,
    gpu_batching,
    min_pass_tokens,
    needed_bytes,
)
from crossrank.backends.torch import TorchBackend
from crossrank.config import BatchingOptions, RuntimeOptions

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


@pytest.mark.slow
def test_parameters_are_counted_from_the_real_weights(english_model_dir: Path) -> None:
    # 22.7M parameters stored in float32 (the header and metadata add a few kB).
    assert 22_700_000 <= count_parameters(english_model_dir) <= 22_720_000


# --- token budget per forward pass on a GPU, from the memory free after loading ---------------------


def test_m3_activations_per_token_in_float16() -> None:
    m3 = {"hidden_size": 1024, "intermediate_size": 4096, "max_position_embeddings": 8194}
    assert activation_bytes_per_token(m3, "float16") == 2 * (2 * 4096 + 5 * 1024) + 4 * 8194  # 59 KB
    assert activation_bytes_per_token(m3, "float32") == 4 * (2 * 4096 + 5 * 1024) + 6 * 8194


def test_fake_gpu_with_room_gets_the_largest_budget_and_short_pairs_can_fill_it(m3_config: dict[str, object]) -> None:
    batching = gpu_batching(130 * GIB, m3_config, "float16")  # an H200 after loading the model
    assert batching.max_batch_tokens == GPU_MAX_BATCH_TOKENS
    assert batching.max_batch_size * 64 == GPU_MAX_BATCH_TOKENS


def test_fake_gpu_that_others_fill_gets_a_budget_its_free_memory_holds(m3_config: dict[str, object]) -> None:
    per_token = activation_bytes_per_token(m3_config, "float16")
    free = 500 * 2**20
    batching = gpu_batching(free, m3_config, "float16")
    assert 1024 < batching.max_batch_tokens < 8192  # below the CPU default: it would have run out of memory
    assert batching.max_batch_tokens * per_token <= free
    assert batching.max_batch_size == batching.max_batch_tokens // 64  # short pairs can fill it
    # Half the memory, half the budget; none at all still lets one pair try (out-of-memory recovery follows).
    assert gpu_batching(free // 2, m3_config, "float16").max_batch_tokens == pytest.approx(
        batching.max_batch_tokens / 2, abs=1
    )
    assert gpu_batching(0, m3_config, "float16").max_batch_tokens == 1
    assert gpu_batching(free, m3_config, "float32").max_batch_tokens < batching.max_batch_tokens


class LiveTensorBytes(TorchDispatchMode):
    """Counts the bytes of the tensors ops create while they are alive, and their peak.

    What any allocator must hold at least (a GPU's caching allocator rounds up and fragments on top,
    hence the budget's share of free memory). Views share their base's storage and count once.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self._holders: dict[int, int] = {}  # storage address -> live tensors on it

    def _release(self, address: int, nbytes: int) -> None:
        self._holders[address] -= 1
        if not self._holders[address]:
            del self._holders[address]
            self.live -= nbytes

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                address, nbytes = storage.data_ptr(), storage.nbytes()
                if address not in self._holders:
                    self._holders[address] = 0
                    self.live += nbytes
                    self.peak = max(self.peak, self.live)
                self._holders[address] += 1
                weakref.finalize(tensor, self._release, address, nbytes)
        return out


@pytest.mark.slow
@pytest.mark.parametrize(("rows", "length"), [(8, 256), (1, 2048)])
def test_the_activation_estimate_covers_a_measured_forward_pass(rows: int, length: int) -> None:
    """Peak activation memory of a real float32 forward pass (on CPU: no GPU here) stays within the estimate.

    Two layers of bge-reranker-v2-m3's width: layers run one after another and free their intermediates,
    but the embedding output lives through all of them. The estimate should not be wasteful either: most
    of it is really used. Many short pairs, and one long pair, whose attention mask weighs more per token.
    (The attention kernel's own buffers are not tensors seen here; tests/gpu checks a GPU's full count.)
    """
    config, model, inputs = m3_width_encoder(max_positions=2050)
    ids, mask = inputs(rows, length)
    with torch.inference_mode(), LiveTensorBytes() as memory:
        model(input_ids=ids, attention_mask=mask)
    estimate = activation_bytes_per_token(config, "float32") * rows * length
    report = f"measured {memory.peak / 2**20:.0f} MiB, estimate {estimate / 2**20:.0f} MiB"
    assert 0.6 * estimate <= memory.peak <= estimate, report


@pytest.mark.slow
def test_fake_gpu_torch_backend_sizes_its_batches_from_the_memory_free_after_loading(
    english_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real TorchBackend on CPU, then told it sits on a GPU with 100 MiB free (the fake: no GPU here)."""
    backend = TorchBackend(
        english_model_dir, runtime=RuntimeOptions(device="cpu"), allow_pickle=False, trust_remote_code=False
    )
    assert backend.batching == BatchingOptions()  # CPU: the defaults
    free = 100 * 2**20
    asked: list[object] = []
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (asked.append(device), (free, 80 * GIB))[1])
    backend._device = torch.device("cuda:0")
    batching = backend._batching()
    assert asked == [torch.device("cuda:0")]
    config = json.loads((english_model_dir / "config.json").read_text())
    assert batching == dataclasses.replace(
        gpu_batching(free, config, "float32"), min_pass_tokens=batching.min_pass_tokens
    )
    assert batching.max_batch_tokens < 8192
    # The pass cost was timed on the model (here on CPU, where both passes are arithmetic): within the budget.
    assert 0 < batching.min_pass_tokens < batching.max_batch_tokens


def test_min_pass_tokens_is_the_one_pair_time_at_the_full_pass_rate() -> None:
    # A GPU whose small pass waits 4 ms on launches and computes 16,384 tokens in 20 ms.
    assert min_pass_tokens(0.004, 0.020, 16384) == 3276
    # On CPU a one-pair pass is a sliver of a full one.
    assert min_pass_tokens(0.002, 1.5, 8192) == 10
    # Noise: a full pass timed no slower than the small one (all launch-bound) prices every pass at its size.
    assert min_pass_tokens(0.005, 0.004, 16384) == 16384
    assert min_pass_tokens(0.0, 0.0, 4096) == 0  # no time for the full pass: unpriced, as on CPU
