"""The accuracy gate of a fast CPU mode: Spearman rho between its scores and float32 torch on judged data.

    python benchmarks/accuracy_gate.py --mode int8 --model ../shared/models/minilm-l6-distilled-reranker-en \
        --data ../shared/data/en_beir_dbpedia_subset --queries 15 --docs 30
    python benchmarks/accuracy_gate.py --mode bf16-autocast ...   # dtype="auto" on a CPU with AMX

NDCG@10 of both comes from `crossrank eval` (see BENCHMARKS.md); this adds the rank correlation of
the scores themselves, pair by pair, and the share of queries whose top-1 document is unchanged.
The model folder is copied to a temporary folder first, so an ONNX export is not written into it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from agreement import agreement

from crossrank import Reranker
from crossrank.evaluate.data import load_beir

# The fast modes and how to build each; float32 torch is the reference for all.
MODES = {
    "int8": {"backend": "onnx", "quantize": "int8"},
    "bf16-autocast": {"device": "cpu", "dtype": "auto"},
}


def judged_items(folder: Path, queries: int, docs: int) -> list[tuple[str, list[str]]]:
    """The first ``queries`` queries of a BEIR folder with their first ``docs`` candidates (title + text)."""
    dataset = load_beir(folder)
    if dataset.candidates is None:
        sys.exit(f"{folder} has no candidates.jsonl")
    chosen = list(dataset.candidates.items())[:queries]
    return [(dataset.queries[query], [dataset.documents[doc] for doc in ids[:docs]]) for query, ids in chosen]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=sorted(MODES), default="int8")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--queries", type=int, default=15)
    parser.add_argument("--docs", type=int, default=30)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="accuracy-gate-"))
    try:
        model = shutil.copytree(args.model, work / "model")
        items = judged_items(args.data, args.queries, args.docs)
        with (
            Reranker(str(model), device="cpu", dtype="float32") as fp32,
            Reranker(str(model), **MODES[args.mode]) as fast_mode,  # type: ignore[arg-type]
        ):
            if args.mode == "bf16-autocast" and fast_mode.dtype != "bfloat16-autocast":
                print(f"this CPU has no AMX: dtype='auto' runs {fast_mode.dtype}, nothing to gate", file=sys.stderr)
                return 2
            exact = [fp32.score([(query, d) for d in documents]) for query, documents in items]
            fast = [fast_mode.score([(query, d) for d in documents]) for query, documents in items]
        a = agreement(exact, fast)
        worst = max(abs(x - y) for row, other in zip(exact, fast, strict=True) for x, y in zip(row, other, strict=True))
        print(
            f"{args.mode} ({fast_mode.dtype}): {a.pairs} pairs, {a.queries} queries: Spearman rho {a.spearman:.4f}, "
            f"top-1 kept {a.top1_kept}/{a.queries}, largest score difference {worst:.4f}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
