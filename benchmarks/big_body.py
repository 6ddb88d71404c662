"""A big request body against a real ``crossrank serve``: time to its 413, /health latency meanwhile, RSS growth.

    python benchmarks/big_body.py -m ../shared/models/minilm-l6-distilled-reranker-en
    python benchmarks/big_body.py -m MODEL --document '{}'    # 5 M empty objects

The body is ``{"query": "q", "documents": [{"text": ""}, ...]}``: as many documents as fit in the default
--max-body-bytes (20,000,000; 1.43 M of them), so only the documents limit refuses it. While it is sent and
answered, another connection polls ``GET /health``; the server's peak RSS is read from /proc (VmHWM, reset just
before the request).
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

_MAX_BODY_BYTES = 20_000_000


def big_body(document: bytes, max_bytes: int = _MAX_BODY_BYTES) -> bytes:
    """A rerank body of as many copies of ``document`` (JSON) as fit in ``max_bytes``."""
    head, item, tail = b'{"query": "q", "documents": [', document + b", ", document + b"]}"
    count = (max_bytes - len(head) - len(tail)) // len(item) + 1
    return head + item * (count - 1) + tail


def _kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def measure(url: str, pid: int, body: bytes, *, poll_s: float = 0.01) -> dict[str, object]:
    """POST ``body`` to /v1/rerank while polling /health; the answer, its time, /health latencies, RSS growth."""
    rss_before = _kib(pid, "VmRSS")
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    answer: dict[str, object] = {}

    def post() -> None:
        started = time.perf_counter()
        r = httpx.post(url + "/v1/rerank", content=body, headers={"content-type": "application/json"}, timeout=300)
        answer.update(status=r.status_code, seconds=time.perf_counter() - started, body=r.text[:300])

    sender = threading.Thread(target=post)
    sender.start()
    latencies: list[float] = []
    with httpx.Client(timeout=300) as client:
        while sender.is_alive():
            started = time.perf_counter()
            assert client.get(url + "/health").status_code == 200
            latencies.append(time.perf_counter() - started)
            time.sleep(poll_s)
    sender.join()
    return {
        "body_mb": round(len(body) / 1e6, 1),
        "documents": body.count(b"}, ") + 1,
        "status": answer["status"],
        "seconds_to_answer": round(float(str(answer["seconds"])), 2),
        "answer": answer["body"],
        "health_polls": len(latencies),
        "health_max_ms": round(max(latencies) * 1000, 1),
        "health_median_ms": round(sorted(latencies)[len(latencies) // 2] * 1000, 1),
        "rss_growth_mb": round((_kib(pid, "VmHWM") - rss_before) / 1024, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-m", "--model", required=True, help="model folder for crossrank serve")
    parser.add_argument("--document", default='{"text": ""}', help="one document, as JSON [%(default)s]")
    parser.add_argument("--runs", type=int, default=2, help="requests, one after another")
    args = parser.parse_args()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "crossrank", "serve", "-m", args.model, "--device", "cpu", "--port", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise SystemExit(f"the server exited with {server.returncode}")
            try:
                if httpx.get(url + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        else:
            raise SystemExit("the server did not get ready in 300 s")
        body = big_body(args.document.encode())
        for run in range(args.runs):
            print(json.dumps({"run": run + 1, **measure(url, server.pid, body)}))
    finally:
        server.terminate()
        server.wait(60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
