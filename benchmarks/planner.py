"""Batch planning time: crossrank's vectorised planner against the plain Python loop it replaced.

Both plan the same pair lengths (fixed seed) at the CPU's batch sizes (8,192 tokens / 64 pairs) and at a
GPU's (32,768 / 512), alternating, best of ``--repeat`` each; the plans must be equal. Planning is serial
CPU time before the first forward pass of every call.

    python benchmarks/planner.py
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the reference lives with the tests

from crossrank.config import BatchingOptions
from crossrank.engine.planner import plan_batches
from reference import plain_plan

Planner = Callable[[list[int], BatchingOptions], list[list[int]]]


def _workloads(pairs: int, seed: int) -> dict[str, list[int]]:
    rng = random.Random(seed)
    return {
        "short (16-64 tokens)": [rng.randint(16, 64) for _ in range(pairs)],
        "rag (30-512, log-normal)": [min(max(int(rng.lognormvariate(5, 0.6)), 30), 512) for _ in range(pairs)],
        "equal (64)": [64] * pairs,
    }


def _seconds(planner: Planner, lengths: list[int], options: BatchingOptions) -> float:
    started = time.perf_counter()
    planner(lengths, options)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=4096, help="pairs per call (the scorer plans at most 4,096)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sizes = {
        "CPU 8192/64": BatchingOptions(),
        "GPU 32768/512": BatchingOptions(max_batch_tokens=32768, max_batch_size=512),
    }
    print(f"{args.pairs} pairs per call, best of {args.repeat}")
    print(f"{'workload':26} {'batch sizes':14} {'plain loop ms':>14} {'crossrank ms':>13} {'speed-up':>9}")
    for name, lengths in _workloads(args.pairs, args.seed).items():
        for label, options in sizes.items():
            if plan_batches(lengths, options) != plain_plan(lengths, options):
                raise SystemExit(f"{name}, {label}: the plans differ")
            plain, ours = [], []
            for _ in range(args.repeat):
                plain.append(_seconds(plain_plan, lengths, options))
                ours.append(_seconds(plan_batches, lengths, options))
            print(
                f"{name:26} {label:14} {min(plain) * 1e3:14.1f} {min(ours) * 1e3:13.1f} {min(plain) / min(ours):8.1f}x"
            )


if __name__ == "__main__":
    main()
