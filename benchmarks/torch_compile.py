"""torch.compile against eager PyTorch for crossrank's torch backend: same model, same generated inputs.

    python benchmarks/torch_compile.py --model ../shared/models/minilm-l6-distilled-reranker-en --mode eager
    python benchmarks/torch_compile.py --model ../shared/models/minilm-l6-distilled-reranker-en --mode compile

One mode per process (compiled graphs are process-wide); run them one after another, twice. Prints pairs/s
over the timed calls and the warm-up call's seconds (compilation included).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch  # noqa: TID251  # a benchmark of the torch backend itself, not package code

from crossrank import Reranker
from crossrank.engine.tokenizer import PairTokenizer
from crossrank.tools.bench import make_workload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--mode", choices=["eager", "compile"], required=True)
    parser.add_argument("--queries", type=int, default=6)
    parser.add_argument("--docs", type=int, default=50)
    args = parser.parse_args()
    workload = make_workload("rag", PairTokenizer.from_pretrained(args.model), queries=args.queries, docs=args.docs)
    with Reranker(str(args.model), device="cpu", dtype="float32") as reranker:
        backend = reranker.scorer.backend
        if args.mode == "compile":
            # Batches come in many shapes (the planner cuts by length): dynamic shapes, not one graph per shape.
            backend._model = torch.compile(backend._model, dynamic=True)  # type: ignore[attr-defined]
        first = workload["queries"][0]
        started = time.perf_counter()
        reranker.rerank(first["query"], first["documents"])
        warm_up = time.perf_counter() - started
        started = time.perf_counter()
        for item in workload["queries"]:
            reranker.rerank(item["query"], item["documents"])
        seconds = time.perf_counter() - started
    pairs = sum(len(item["documents"]) for item in workload["queries"])
    print(
        json.dumps({"mode": args.mode, "pairs_per_second": round(pairs / seconds, 2), "warm_up_s": round(warm_up, 1)})
    )


if __name__ == "__main__":
    main()
