"""Throughput of `crossrank batch`, local engine vs Ray engine, side by side in one run.

Builds an input from ../shared/data/en_beir_dbpedia_subset (each query's 100 BM25 candidates cut into
rows of --docs documents, title + text), runs each engine as a user would (`python -m crossrank batch`,
a fresh process each), and prints wall time, rows/s and pairs/s. Each engine also runs a one-part
input, so its fixed cost (model load, Ray start, actors) can be taken out: steady pairs/s =
(pairs - pairs_small) / (seconds - seconds_small). Outputs of all engines are compared at the end.

    nice -n 10 python benchmarks/batch_throughput.py --model ../shared/models/minilm-l6-distilled-reranker-en
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "en_beir_dbpedia_subset"


def build_input(path: Path, docs_per_row: int, limit: int | None) -> tuple[int, int]:
    corpus = {}
    with (DATA / "corpus.jsonl").open() as handle:
        for line in handle:
            doc = json.loads(line)
            corpus[doc["_id"]] = f"{doc['title']}. {doc['text']}"
    queries = {q["_id"]: q["text"] for q in map(json.loads, (DATA / "queries.jsonl").open())}
    rows = 0
    pairs = 0
    with path.open("w") as out:
        for line in (DATA / "candidates.jsonl").open():
            cand = json.loads(line)
            ids = [d for d in cand["doc_ids"] if d in corpus]
            for start in range(0, len(ids), docs_per_row):
                if limit is not None and rows >= limit:
                    return rows, pairs
                docs = [corpus[d] for d in ids[start : start + docs_per_row]]
                row = {"id": f"{cand['query_id']}#{start}", "query": queries[cand["query_id"]], "documents": docs}
                out.write(json.dumps(row) + "\n")
                rows += 1
                pairs += len(docs)
    return rows, pairs


def batch(source: Path, output: Path, model: str, extra: list[str]) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "CROSSRANK_DEVICE": "cpu", "RAY_AUTH_MODE": "disabled"}
    command = [sys.executable, "-m", "crossrank", "batch", str(source), str(output), "-m", model, "--json", *extra]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    report: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    report["process_seconds"] = wall
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--docs", type=int, default=10, help="documents per row")
    parser.add_argument("--rows", type=int, default=None, help="rows to use (default: all 400)")
    parser.add_argument("--part-rows", type=int, default=20)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    engines = {
        "local": [],
        f"ray, 1 actor x {cores} CPU": ["--engine", "ray", "--actors", "1", "--num-cpus", str(cores)],
        f"ray, {cores} actors x 1 CPU": ["--engine", "ray", "--actors", str(cores), "--num-cpus", "1"],
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows, pairs = build_input(work / "in.jsonl", args.docs, args.rows)
        build_input(work / "small.jsonl", args.docs, args.part_rows)
        print(f"input: {rows} rows, {pairs} pairs ({args.docs} dbpedia passages per row); {cores} CPU cores")
        print("| engine | rows | wall s (process) | rows/s | pairs/s | fixed cost s | steady pairs/s |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        outputs = {}
        for name, extra in engines.items():
            tag = str(len(outputs))
            small = batch(
                work / "small.jsonl",
                work / f"small{tag}.jsonl",
                args.model,
                [*extra, "--part-rows", str(args.part_rows)],
            )
            full = batch(
                work / "in.jsonl", work / f"out{tag}.jsonl", args.model, [*extra, "--part-rows", str(args.part_rows)]
            )
            steady = (full["pairs"] - small["pairs"]) / (full["process_seconds"] - small["process_seconds"])
            print(
                f"| {name} | {rows} | {full['process_seconds']:.1f} | {rows / full['process_seconds']:.2f} "
                f"| {pairs / full['process_seconds']:.1f} | {small['process_seconds']:.1f} | {steady:.1f} |"
            )
            outputs[name] = [json.loads(line) for line in (work / f"out{tag}.jsonl").open()]
        base = outputs["local"]
        for name, rows_out in outputs.items():
            same_ranks = all(
                [r["rank"] for r in a["results"]] == [r["rank"] for r in b["results"]]
                for a, b in zip(base, rows_out, strict=True)
            )
            diff = max(
                abs(x["score"] - y["score"])
                for a, b in zip(base, rows_out, strict=True)
                for x, y in zip(a["results"], b["results"], strict=True)
            )
            print(
                f"{name} vs local: identical={rows_out == base}, same ranks={same_ranks}, max |score diff|={diff:.2e}"
            )


if __name__ == "__main__":
    main()
