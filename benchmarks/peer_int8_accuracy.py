"""int8 accuracy, crossrank's and its peers', against float32 on judged data: NDCG@10, Spearman rho, top-1.

    python benchmarks/peer_int8_accuracy.py --model ../shared/models/minilm-l6-distilled-reranker-en \
        --data ../shared/data/en_beir_dbpedia_subset \
        --peer sentence-transformers-openvino-int8 --peer-python /tmp/ovenv/bin/python

Every system scores the same pairs: each query of the data set with all its candidates (candidates.jsonl).
The reference is crossrank's float32 torch scores (equal to sentence-transformers' within 1e-4, see the
parity tests); crossrank's ONNX int8 is scored alongside, so the peer's int8 helper and crossrank's are
judged on the same footing. The peer loads and quantizes as `crossrank bench` runs it (the peer's code is
bench_runner's), in its own process and Python, on a copy of the model folder.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the peer's Python runs this file too, and may lack crossrank
    from agreement import Agreement

RUNNER = Path(__file__).resolve().parents[1] / "src" / "crossrank" / "tools" / "bench_runner.py"


def _score_as_peer(spec_path: str, out_path: str) -> None:
    """In the peer's Python: score every query's documents with bench_runner's loader for the peer."""
    sys.path.insert(0, str(RUNNER.parent))
    import bench_runner  # a standalone file: it needs only the standard library and the peer

    spec = json.loads(Path(spec_path).read_text())
    score, precision = bench_runner.SYSTEMS[spec["system"]](spec, [0, 0, 0])
    queries = json.loads(Path(spec["workload"]).read_text())["queries"]
    scores = [[float(x) for x in score(item["query"], item["documents"])] for item in queries]  # type: ignore[attr-defined]
    Path(out_path).write_text(json.dumps({"precision": precision, "scores": scores}))


def _report(name: str, a: Agreement, ndcg: float, ndcg_fp32: float) -> str:
    return (
        f"{name}: NDCG@10 {ndcg:.4f} ({100 * (ndcg - ndcg_fp32):+.2f} points), Spearman rho {a.spearman:.4f} over "
        f"{a.pairs} pairs, top-1 kept {a.top1_kept}/{a.queries}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--peer", required=True, help="a bench peer, e.g. sentence-transformers-onnx-int8")
    parser.add_argument("--peer-python", default=sys.executable)
    parser.add_argument("--max-length", type=int, default=512)
    args = parser.parse_args()

    from agreement import agreement, ndcg_at_10

    from crossrank import Reranker
    from crossrank.evaluate.data import load_beir

    dataset = load_beir(args.data)
    if dataset.candidates is None:
        sys.exit(f"{args.data} has no candidates.jsonl")
    ids = list(dataset.candidates.items())
    queries: list[dict[str, Any]] = [
        {"query": dataset.queries[q], "documents": [dataset.documents[d] for d in docs]} for q, docs in ids
    ]

    def ndcg(scores: list[list[float]]) -> float:
        return ndcg_at_10(dataset.qrels, dataset.candidates, scores)

    work = Path(tempfile.mkdtemp(prefix="peer-int8-"))
    try:
        model = shutil.copytree(args.model, work / "model")  # both int8 paths write their exports into it
        workload = work / "workload.json"
        workload.write_text(json.dumps({"queries": queries}))
        options = {"max_length": args.max_length}
        with Reranker(str(model), device="cpu", dtype="float32", **options) as fp32:
            reference = [fp32.compute_score([(i["query"], d) for d in i["documents"]]) for i in queries]
        with Reranker(str(model), device="cpu", backend="onnx", quantize="int8", **options) as int8:
            ours = [int8.compute_score([(i["query"], d) for d in i["documents"]]) for i in queries]
        spec = {"system": args.peer, "model": str(model), "max_length": args.max_length, "workload": str(workload)}
        (work / "spec.json").write_text(json.dumps(spec))
        subprocess.run(
            [args.peer_python, __file__, "--score-as-peer", str(work / "spec.json"), str(work / "peer.json")],
            check=True,
        )
        peer = json.loads((work / "peer.json").read_text())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = ndcg(reference)
    print(f"float32 (crossrank torch): NDCG@10 {base:.4f}, {len(ids)} queries")
    print(_report("crossrank onnx int8", agreement(reference, ours), ndcg(ours), base))
    peer_scores = peer["scores"]
    print(_report(f"{args.peer} ({peer['precision']})", agreement(reference, peer_scores), ndcg(peer_scores), base))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--score-as-peer":
        _score_as_peer(sys.argv[2], sys.argv[3])
        sys.exit(0)
    sys.exit(main())
