"""The accuracy gate of a fast CPU mode against float32 torch on judged data: Spearman rho, top-1 kept, NDCG@10.

    python benchmarks/accuracy_gate.py --mode int8 --model ../shared/models/minilm-l6-distilled-reranker-en \
        --data ../shared/data/en_beir_dbpedia_subset --queries 15 --docs 30
    python benchmarks/accuracy_gate.py --mode bf16-autocast ...     # float32 weights under bfloat16 autocast
    python benchmarks/accuracy_gate.py --mode bfloat16 ...          # bfloat16 weights

A mode passes where rho >= 0.99 and NDCG@10 is within 0.5 points of float32's (and the keyword traps keep their
top-1: tests/backends/test_cpu_autocast.py). The bfloat16 modes are forced here whatever ``dtype="auto"`` would
choose on this CPU: the gate is about accuracy, which does not depend on the CPU's speed. The model folder is
copied to a temporary folder first, so an ONNX export is not written into it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from agreement import agreement, ndcg_at_10

from crossrank import Reranker
from crossrank.evaluate.data import load_beir

# The fast modes and how to build each; float32 torch is the reference for all.
MODES = {
    "int8": {"backend": "onnx", "quantize": "int8"},
    "bf16-autocast": {"device": "cpu", "dtype": "float32"},  # autocast switched on below
    "bfloat16": {"device": "cpu", "dtype": "bfloat16"},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=sorted(MODES), default="int8")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--queries", type=int, default=15)
    parser.add_argument("--docs", type=int, default=30)
    args = parser.parse_args()
    dataset = load_beir(args.data)
    if dataset.candidates is None:
        sys.exit(f"{args.data} has no candidates.jsonl")
    candidates = {query: ids[: args.docs] for query, ids in list(dataset.candidates.items())[: args.queries]}
    items = [(dataset.queries[query], [dataset.documents[doc] for doc in ids]) for query, ids in candidates.items()]
    work = Path(tempfile.mkdtemp(prefix="accuracy-gate-"))
    try:
        model = shutil.copytree(args.model, work / "model")
        with (
            Reranker(str(model), device="cpu", dtype="float32") as fp32,
            Reranker(str(model), **MODES[args.mode]) as fast_mode,  # type: ignore[arg-type]
        ):
            if args.mode == "bf16-autocast":
                fast_mode.scorer.backend._autocast = True  # type: ignore[attr-defined]
            exact = [fp32.score([(query, d) for d in documents]) for query, documents in items]
            fast = [fast_mode.score([(query, d) for d in documents]) for query, documents in items]
        a = agreement(exact, fast)
        worst = max(abs(x - y) for row, other in zip(exact, fast, strict=True) for x, y in zip(row, other, strict=True))
        base, ndcg = ndcg_at_10(dataset.qrels, candidates, exact), ndcg_at_10(dataset.qrels, candidates, fast)
        print(
            f"{args.mode} on {dataset.name}: {a.pairs} pairs, {a.queries} queries: Spearman rho {a.spearman:.4f}, "
            f"top-1 kept {a.top1_kept}/{a.queries}, NDCG@10 {100 * ndcg:.2f} vs float32 {100 * base:.2f} "
            f"({100 * (ndcg - base):+.2f} points), largest score difference {worst:.4f}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
