"""The GPU path on a real CUDA GPU: skipped without one (CI has none; `benchmarks/gpu.sh` runs these on a GPU machine).

On CPU the same code is covered with fake GPUs' numbers (tests/backends/test_placement.py,
tests/backends/test_torch_recovery.py); here the numbers are the card's own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import m3_width_encoder
from crossrank import Reranker
from crossrank.backends.placement import GPU_MAX_BATCH_TOKENS, activation_bytes_per_token
from crossrank.tools.shapes import m3_shape

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu.sh runs these)")

GIB = 2**30
QUERY = "how do giant pandas live in the wild"
DOCS = [
    "The giant panda lives in mountain forests of central China and eats bamboo. " * 30,
    "Pandas are bears; in the wild they spend most of the day feeding on bamboo. " * 12,
    "The stock market fell on Tuesday after the central bank raised rates.",
    "hi",
]


@pytest.fixture(scope="module")
def m3_shape_dir(xlmr_tokenizer_dir: Path) -> Path:
    """The same build `crossrank bench -m m3-shape` uses (built once per machine)."""
    return m3_shape(xlmr_tokenizer_dir)


@pytest.fixture
def held_gpu_memory() -> Iterator[list[torch.Tensor]]:
    """Memory this test holds on the GPU as another process would; released afterwards."""
    held: list[torch.Tensor] = []
    yield held
    held.clear()
    torch.cuda.empty_cache()


@pytest.mark.parametrize(("rows", "length"), [(64, 512), (512, 64), (2, 8192)])
def test_cuda_peak_activation_memory_is_within_the_estimate(rows: int, length: int) -> None:
    """torch's own peak-allocation counter over one float16 forward pass of bge-reranker-v2-m3's width."""
    config, model, inputs = m3_width_encoder(max_positions=8194)
    model = model.to("cuda", torch.float16)
    ids, mask = inputs(rows, length, "cuda")
    with torch.inference_mode():
        model(input_ids=ids, attention_mask=mask)  # kernels chosen, workspaces made
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        model(input_ids=ids, attention_mask=mask)
        torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    estimate = activation_bytes_per_token(config, "float16") * rows * length
    assert peak <= estimate, f"{rows} x {length}: peak {peak / 2**20:.0f} MiB, estimate {estimate / 2**20:.0f} MiB"


def test_auto_puts_the_model_on_the_gpu_in_float16_with_a_gpu_sized_budget(m3_shape_dir: Path) -> None:
    with Reranker(str(m3_shape_dir)) as rr:
        assert (rr.device, rr.dtype) == ("cuda:0", "float16")
        free, _ = torch.cuda.mem_get_info()
        if free > 20 * GIB:
            assert rr.batching.max_batch_tokens == GPU_MAX_BATCH_TOKENS
        assert rr.batching.max_batch_size == max(rr.batching.max_batch_tokens // 64, 64)
        # Timed at load: a pass of a few pairs waits on kernel launches, so it costs more than a CPU's 128 tokens.
        print(f"m3-shape float16: a pass costs at least {rr.batching.min_pass_tokens} tokens")
        assert 128 < rr.batching.min_pass_tokens < rr.batching.max_batch_tokens
        results = rr.rerank(QUERY, DOCS)
        assert all(np.isfinite(r.score) for r in results)


def test_a_gpu_that_others_fill_gets_a_smaller_budget_and_no_out_of_memory(
    m3_shape_dir: Path, held_gpu_memory: list[torch.Tensor]
) -> None:
    """Leave 2 GiB free (the model takes 1.1 GiB of it in float16): the budget must fit what is left.

    24 documents of about 9,800 tokens, each an 8,192-token window and a shorter one: under the largest
    budget 4 windows would go in one pass; with about 1 GiB left the budget holds about 11,000 tokens.
    """
    torch.cuda.empty_cache()  # what earlier tests left cached would count as free below
    free, _ = torch.cuda.mem_get_info()
    if free < 6 * GIB:
        pytest.skip(f"needs 6 GiB free on the GPU, has {free / GIB:.1f}")
    held_gpu_memory.append(torch.empty(free - 2 * GIB, dtype=torch.uint8, device="cuda"))
    with Reranker(str(m3_shape_dir), device="cuda", dtype="float16", max_length=8192) as rr:
        assert rr.batching.max_batch_tokens < GPU_MAX_BATCH_TOKENS
        sentence = "pandas eat bamboo in the mountain forests of China. "
        long_docs = [f"document {i}: " + sentence * 700 for i in range(24)]
        results = rr.rerank(QUERY, long_docs + DOCS)
        backend = rr.scorer.backend
        assert backend.recovery.oom_splits == 0, backend.recovery
        assert len(results) == len(long_docs) + len(DOCS)


def test_float16_and_bfloat16_rank_like_float32_on_the_gpu(tiny_xlmr_dir: Path) -> None:
    scores = {}
    for dtype in ("float32", "float16", "bfloat16"):
        with Reranker(str(tiny_xlmr_dir), device="cuda", dtype=dtype) as rr:
            scores[dtype] = np.array(rr.compute_score([(QUERY, d) for d in DOCS]))
    with Reranker(str(tiny_xlmr_dir), device="cpu", dtype="float32") as rr:
        cpu = np.array(rr.compute_score([(QUERY, d) for d in DOCS]))
    np.testing.assert_allclose(scores["float32"], cpu, atol=1e-4)
    np.testing.assert_allclose(scores["float16"], cpu, atol=2e-2)
    np.testing.assert_allclose(scores["bfloat16"], cpu, atol=5e-2)


def test_explicit_batch_sizes_win_on_the_gpu(tiny_xlmr_dir: Path) -> None:
    with Reranker(str(tiny_xlmr_dir), device="cuda", max_batch_tokens=4096, max_batch_size=16) as rr:
        assert (rr.batching.max_batch_tokens, rr.batching.max_batch_size) == (4096, 16)
