"""bfloat16 on this CPU against float32, side by side: what ``dtype="auto"`` should run here.

    python benchmarks/cpu_bf16.py --tokenizer ../shared/models/xlm-roberta-tokenizer            # m3-shape
    python benchmarks/cpu_bf16.py --model ../shared/models/minilm-l6-distilled-reranker-en

``dtype="auto"`` times these modes on one encoder layer of the model's shape and keeps the fastest
(`crossrank.backends.cpu_mode`). This times them on the whole model, in one process on the same generated `rag`
workload and planned batches: float32, float32 weights under bfloat16 autocast and bfloat16 weights, alternated
over rounds, to check that choice. Prints the CPU's flags, what ``auto`` chose (and its one-layer ratios), pairs/s
of each mode per round, each mode's median ratio to float32 and its largest score difference from float32.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from crossrank import Reranker
from crossrank.backends.cpu_mode import cpu_mode_of
from crossrank.engine.tokenizer import PairTokenizer
from crossrank.tools.bench import machine_facts, make_workload
from crossrank.tools.shapes import m3_shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a model folder; default: the m3-shaped model")
    parser.add_argument("--tokenizer", type=Path, help="XLM-R tokenizer folder, to build the m3-shaped model")
    parser.add_argument("--queries", type=int, default=1)
    parser.add_argument("--docs", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.model is None and args.tokenizer is None:
        parser.error("pass --model, or --tokenizer to build the m3-shaped model")
    model = args.model or m3_shape(args.tokenizer)
    workload = make_workload("rag", PairTokenizer.from_pretrained(model), queries=args.queries, docs=args.docs)
    calls = [(item["query"], item["documents"]) for item in workload["queries"]]
    pairs = sum(len(documents) for _, documents in calls)
    print(json.dumps(machine_facts()))
    with Reranker(str(model), device="cpu") as auto:
        print(json.dumps({"auto": cpu_mode_of(auto.scorer.backend)}))
    with (
        Reranker(str(model), device="cpu", dtype="float32") as fp32,
        Reranker(str(model), device="cpu", dtype="bfloat16") as bf16,
    ):
        modes = {"float32": (fp32, False), "bf16-autocast": (fp32, True), "bfloat16-weights": (bf16, False)}
        rates: dict[str, list[float]] = {name: [] for name in modes}
        scores: dict[str, list[float]] = {}
        for round_ in range(args.rounds + 1):  # round 0 warms every mode up and is not counted
            for name, (reranker, autocast) in modes.items():
                # The switch dtype="auto" sets where it measured autocast fastest, forced here on any CPU.
                reranker.scorer.backend._autocast = autocast  # type: ignore[attr-defined]
                started = time.perf_counter()
                results = [reranker.score([(query, d) for d in documents]) for query, documents in calls]
                seconds = time.perf_counter() - started
                scores[name] = [s for result in results for s in result]
                if round_:
                    rates[name].append(pairs / seconds)
                    print(json.dumps({"round": round_, "mode": name, "pairs_per_second": round(pairs / seconds, 3)}))
    base = statistics.median(rates["float32"])
    for name, values in rates.items():
        worst = max(abs(a - b) for a, b in zip(scores[name], scores["float32"], strict=True))
        summary = {"mode": name, "median_pairs_per_second": round(statistics.median(values), 3)}
        summary |= {"vs_float32": round(statistics.median(values) / base, 2), "largest_score_difference": worst}
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
