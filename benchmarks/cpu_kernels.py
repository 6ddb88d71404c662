"""How much faster bfloat16 can be than float32 on this CPU: the model's matrix products and attention alone.

    python benchmarks/cpu_kernels.py                          # bge-reranker-v2-m3's shape (hidden 1024, 16 heads)
    python benchmarks/cpu_kernels.py --hidden 384 --intermediate 1536 --heads 12   # MiniLM-L6's

A reranker's time on a CPU is nearly all in its linear layers (hidden -> hidden four times, hidden -> intermediate,
intermediate -> hidden) and its attention. This times each in float32 and in bfloat16 (torch's kernels, one
process, rounds alternated, best of each) on a micro-batch's worth of tokens, and prints GFLOP/s and the bfloat16
ratio: the whole model's bfloat16 speed-up cannot exceed what these give (``benchmarks/cpu_bf16.py`` measures that).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch  # noqa: TID251  # times torch's kernels themselves; a benchmark, not package code
import torch.nn.functional as F  # noqa: TID251

from crossrank.tools.bench import machine_facts


def _best(run: Callable[[], object], rounds: int) -> float:
    run()  # kernels chosen, workspaces made
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--intermediate", type=int, default=4096)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--length", type=int, default=320)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    print(json.dumps(machine_facts()))
    tokens, width, inner = args.rows * args.length, args.hidden, args.intermediate
    generator = torch.Generator().manual_seed(0)
    kernels: dict[str, tuple[float, Callable[[torch.dtype], Callable[[], object]]]] = {}
    shapes = {
        "hidden->hidden": (width, width),
        "hidden->intermediate": (width, inner),
        "intermediate->hidden": (inner, width),
    }
    for name, (fan_in, fan_out) in shapes.items():
        x, w, b = (
            torch.randn(*shape, generator=generator) for shape in ((tokens, fan_in), (fan_out, fan_in), (fan_out,))
        )

        def linear(
            dtype: torch.dtype, x: torch.Tensor = x, w: torch.Tensor = w, b: torch.Tensor = b
        ) -> Callable[[], object]:
            xd, wd, bd = x.to(dtype), w.to(dtype), b.to(dtype)
            return lambda: F.linear(xd, wd, bd)

        kernels[name] = (2.0 * tokens * fan_in * fan_out, linear)
    size = (args.rows, args.heads, args.length, width // args.heads)
    q, k, v = (torch.randn(*size, generator=generator) for _ in range(3))
    mask = torch.zeros(args.rows, 1, args.length, args.length)
    mask[-1, ..., -1] = float("-inf")  # padding, as in a real batch

    def attention(dtype: torch.dtype) -> Callable[[], object]:
        qd, kd, vd, md = q.to(dtype), k.to(dtype), v.to(dtype), mask.to(dtype)
        return lambda: F.scaled_dot_product_attention(qd, kd, vd, attn_mask=md)

    kernels["attention (SDPA)"] = (4.0 * args.rows * args.heads * args.length**2 * (width // args.heads), attention)
    with torch.inference_mode():
        for name, (flops, make) in kernels.items():
            runs = {dtype: make(dtype) for dtype in (torch.float32, torch.bfloat16)}
            seconds = {dtype: float("inf") for dtype in runs}
            for _ in range(2):  # alternated, so a neighbour's load weighs on both alike
                for dtype, run in runs.items():
                    seconds[dtype] = min(seconds[dtype], _best(run, args.rounds // 2))
            row = {"kernel": name, "tokens": tokens}
            row |= {f"{str(d).removeprefix('torch.')}_gflops": round(flops / s / 1e9, 1) for d, s in seconds.items()}
            row["bfloat16_vs_float32"] = round(seconds[torch.float32] / seconds[torch.bfloat16], 2)
            print(json.dumps(row))


if __name__ == "__main__":
    main()
