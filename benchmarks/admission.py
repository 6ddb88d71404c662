"""How long a small request waits behind a big one, with and without the server's work cap (in process, no HTTP).

    python benchmarks/admission.py -m ../shared/models/minilm-l6-distilled-reranker-en

The big request is one 200,000-character document with ``max_chunks_per_doc`` windows (Cohere v1 field); the small
one, two short documents, is sent once the big one is being scored. Prints one JSON line per case.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import string
import time

import httpx

from crossrank import Reranker
from crossrank.engine.batcher import QueueOptions
from crossrank.server import ServerOptions, create_app
from crossrank.server.options import REQUEST_SECONDS


def _document(chars: int) -> str:
    rng = random.Random(0)
    words = ["".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 9))) for _ in range(5000)]
    return " ".join(rng.choice(words) for _ in range(chars // 4))[:chars]


async def _case(model: str, queue: QueueOptions, chunks: int, label: str) -> dict[str, object]:
    # The app closes its reranker when it stops: each case loads its own.
    app = create_app(ServerOptions(model_name="m", queue=queue), load=lambda: Reranker(model, device="cpu"))
    async with app.router.lifespan_context(app):
        while app.state.service.state.status == "loading":
            await asyncio.sleep(0.05)
        batcher = app.state.service.state.reranker.batcher
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://b", timeout=600) as client:
            body = {"query": "what is it", "documents": [_document(200_000)], "max_chunks_per_doc": chunks}
            started = time.perf_counter()
            big = asyncio.create_task(client.post("/v1/rerank", json=body))
            await asyncio.sleep(1.0)  # the big one is planned and being scored (or already refused)
            sent = time.perf_counter()
            small = await client.post("/v1/rerank", json={"query": "what is it", "documents": ["a cat", "a dog"]})
            small_s = time.perf_counter() - sent
            answer = await big
            big_s = time.perf_counter() - started
            return {
                "case": label,
                "max_request_tokens": batcher.max_request_tokens,
                "big": {"max_chunks_per_doc": chunks, "status": answer.status_code, "seconds": round(big_s, 2)},
                "big_tokens": answer.headers.get("x-compute-tokens"),
                "small": {"status": small.status_code, "seconds": round(small_s, 2)},
                "tokens_per_second": round(batcher.tokens_per_second),
            }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-m", "--model", required=True)
    parser.add_argument("--big-chunks", type=int, default=128, help="windows of the big request")
    parser.add_argument("--capped-chunks", type=int, default=20, help="windows of a big request under the cap")
    parser.add_argument("--skip-uncapped", action="store_true", help="leave out the slow case without a cap")
    args = parser.parse_args()
    auto = QueueOptions(max_request_seconds=REQUEST_SECONDS)
    cases = [
        (QueueOptions(), args.big_chunks, "no cap (before)"),
        (auto, args.big_chunks, "auto cap: the same big request"),
        (auto, args.capped_chunks, "auto cap: a big request under the cap"),
    ]
    for queue, chunks, label in cases[1:] if args.skip_uncapped else cases:
        print(json.dumps(asyncio.run(_case(args.model, queue, chunks, label))), flush=True)


if __name__ == "__main__":
    main()
