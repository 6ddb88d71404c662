"""Peak memory and wall time of a cold ONNX export (what the first ``backend="onnx"`` load costs).

    python benchmarks/onnx_export_memory.py --tokenizer ../shared/models/xlm-roberta-tokenizer --quantize int8
    python benchmarks/onnx_export_memory.py --tokenizer ../shared/models/xlm-roberta-tokenizer --layers 4

Builds a random model of bge-reranker-v2-m3's shape (``--layers`` fewer layers for a smaller one; the
full shape is built once into crossrank's cache, as ``crossrank bench --model m3-shape`` does) or takes
``--model``, links its files into a fresh folder (so nothing is reused) and loads it there with the ONNX
backend in a child process. The export runs its steps in processes of their own: the resident memory of
the whole process tree is sampled every 50 ms and summed, and each process's own peak is read from the
kernel when it ends. Prints one JSON line: the float32 weight size, the tree's peak, the largest single
process's peak, both as multiples of the weights, and the wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from crossrank.backends.placement import count_parameters
from crossrank.backends.synthetic import M3_SHAPE, build_random_model
from crossrank.tools.bench import machine_facts
from crossrank.tools.shapes import m3_shape

_LOAD = """
import logging, sys
from crossrank import Reranker
logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")  # each step's peak, among others
with Reranker(sys.argv[1], device="cpu", backend="onnx", quantize=sys.argv[2]) as rr:
    rr.compute_score(["what is panda?", "The giant panda is a bear."])
"""


def _tree_rss(root: int) -> int:
    """Resident bytes of ``root`` and all its descendants now (what has gone since reads as nothing)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            rss[int(entry.name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
            children.setdefault(int(fields[1]), []).append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def measure(model: Path, quantize: str) -> dict[str, float]:
    """Load ``model`` cold with the ONNX backend in a child; the tree's and the largest process's peak, wall time."""
    with tempfile.TemporaryDirectory(prefix="onnx-export-memory-") as scratch:
        fresh = Path(scratch) / "model"
        fresh.mkdir()
        for item in model.iterdir():
            if item.is_file():
                (fresh / item.name).symlink_to(item.resolve())
        peak = 0
        started = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-c", _LOAD, str(fresh), quantize])
        while child.poll() is None:
            peak = max(peak, _tree_rss(child.pid))
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        if child.returncode:
            sys.exit(f"the load failed with status {child.returncode}")
    largest = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return {"tree_peak_bytes": peak, "largest_process_peak_bytes": largest, "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a model folder; default: the m3-shaped model")
    parser.add_argument("--tokenizer", type=Path, help="XLM-R tokenizer folder, to build the m3-shaped model")
    parser.add_argument("--layers", type=int, help="build m3-shape with this many layers instead of 24")
    parser.add_argument("--quantize", choices=("none", "int8"), default="int8")
    args = parser.parse_args()
    if args.model is None and args.tokenizer is None:
        parser.error("pass --model, or --tokenizer to build the m3-shaped model")
    with tempfile.TemporaryDirectory(prefix="onnx-export-model-") as built:
        model = args.model
        if model is None and args.layers is not None:
            config = {**M3_SHAPE, "num_hidden_layers": args.layers}
            model = build_random_model(Path(built) / "model", args.tokenizer, config)
        model = model or m3_shape(args.tokenizer)
        weights = 4 * count_parameters(model)
        result = measure(model, args.quantize)
    ratios = {f"{name[:-6]}_x_weights": round(value / weights, 2) for name, value in result.items() if "peak" in name}
    print(json.dumps({**machine_facts(), "fp32_weight_bytes": weights, "quantize": args.quantize, **result, **ratios}))


if __name__ == "__main__":
    main()
