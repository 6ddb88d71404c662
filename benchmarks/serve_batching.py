"""Dynamic batching on vs off: N concurrent clients x small rerank requests against the real server.

Both servers run the same model on the same machine in one run, one after the other, each in its own
process on a free 127.0.0.1 port; the clients send identical requests (fixed seed). Prints requests/s,
pairs/s and p50/p95/p99 latency for each, and the ratios.

    python benchmarks/serve_batching.py --model ../shared/models/minilm-l6-distilled-reranker-en
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
# Word lists read best as sentences.
WORDS = "the of and to in is was for on that with by as it from at his an were are which this be or has".split()  # noqa: SIM905
TOPICS = "panda berlin python coffee volcano violin glacier tennis saturn bread river engine".split()  # noqa: SIM905


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _workload(requests: int, documents: int, seed: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    bodies = []
    for i in range(requests):
        topic = rng.choice(TOPICS)
        docs = [" ".join([rng.choice(TOPICS), *rng.choices(WORDS, k=rng.randint(15, 45))]) for _ in range(documents)]
        bodies.append({"model": "bench", "query": f"what is a {topic}? ({i})", "documents": docs})
    return bodies


def _start(model: str, extra: list[str], threads: int | None) -> tuple[subprocess.Popen[bytes], str]:
    port = _port()
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    args = [sys.executable, "-m", "crossrank", "serve", "-m", model, "--device", "cpu", "--port", str(port)]
    args += ["--log-level", "warning", "--slow-ms", "1e9", *extra]
    if threads:
        env["CROSSRANK_NUM_THREADS"] = str(threads)
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/ready", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.3)
    process.kill()
    raise SystemExit("server did not become ready")


async def _drive(url: str, bodies: list[dict[str, object]], clients: int) -> tuple[float, list[float]]:
    queue: asyncio.Queue[dict[str, object]] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    latencies: list[float] = []

    async def client(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            started = time.perf_counter()
            response = await http.post(url + "/v2/rerank", json=body)
            response.raise_for_status()
            latencies.append(time.perf_counter() - started)

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=clients)) as http:
        await http.post(url + "/v2/rerank", json=bodies[0])  # warm the connection path
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        return time.perf_counter() - started, latencies


def _run(
    name: str, model: str, extra: list[str], bodies: list[dict[str, object]], clients: int, threads: int | None
) -> dict[str, object]:
    process, url = _start(model, extra, threads)
    try:
        seconds, latencies = asyncio.run(_drive(url, bodies, clients))
        metrics = httpx.get(url + "/metrics").text
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    passes = next(
        float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("crossrank_forward_passes_total")
    )
    pairs = sum(len(b["documents"]) for b in bodies)  # type: ignore[arg-type]
    ms = np.array(latencies) * 1000
    return {
        "config": name,
        "flags": " ".join(extra) or "(defaults)",
        "requests_per_s": len(bodies) / seconds,
        "pairs_per_s": pairs / seconds,
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "forward_passes": passes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=320)
    parser.add_argument("--documents", type=int, default=4, help="documents per request")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads of the server")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    bodies = _workload(args.requests, args.documents, args.seed)
    runs = [
        _run("dynamic batching", args.model, [], bodies, args.clients, args.threads),
        _run(
            "one request per batch",
            args.model,
            ["--max-batch-requests", "1", "--max-wait-ms", "0"],
            bodies,
            args.clients,
            args.threads,
        ),
    ]
    on, off = runs
    ratios = {
        "throughput_x": on["requests_per_s"] / off["requests_per_s"],  # type: ignore[operator]
        "p50_x": off["p50_ms"] / on["p50_ms"],  # type: ignore[operator]
        "p99_x": off["p99_ms"] / on["p99_ms"],  # type: ignore[operator]
    }
    if args.json:
        print(json.dumps({"runs": runs, "ratios": ratios, "args": vars(args)}, indent=2))
        return
    print(f"{args.clients} clients x {args.requests} requests x {args.documents} documents, model {args.model}")
    print(f"{'config':24} {'req/s':>8} {'pairs/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'passes':>7}")
    for r in runs:
        print(
            f"{r['config']:24} {r['requests_per_s']:8.1f} {r['pairs_per_s']:9.1f} {r['p50_ms']:8.1f} "
            f"{r['p95_ms']:8.1f} {r['p99_ms']:8.1f} {r['forward_passes']:7.0f}"
        )
    print(
        f"throughput x{ratios['throughput_x']:.2f}, "
        f"p50 latency x{ratios['p50_x']:.2f} lower, p99 x{ratios['p99_x']:.2f} lower"
    )


if __name__ == "__main__":
    main()
