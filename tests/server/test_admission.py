"""The server admits work by the model's unit (windows x tokens), in process on the fake backend.

A request over the work cap is 413 before it is queued; a small request sent while a big one is scored is
answered within the cap's time; a client that disconnects has the rest of its forward passes dropped.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from crossrank import Reranker
from crossrank.backends.fake import FakeBackend
from crossrank.config import MAX_CHUNKS_PER_DOC
from crossrank.engine.batcher import QueueOptions
from crossrank.server import ServerOptions, create_app
from server_process import metric

LONG = "a long passage about glaciers and the rivers they feed, " * 400  # 12 windows, 6,144 tokens (XLM-R, 512)


@asynccontextmanager
async def _serving(
    fake_model_dir: Path, queue: QueueOptions, **latency: float
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient, FakeBackend]]:
    """The app on its own fake reranker (``latency`` / ``latency_per_token`` per pass), started and ready."""
    reranker = Reranker(str(fake_model_dir), backend="fake")
    backend = reranker.scorer.backend
    assert isinstance(backend, FakeBackend)
    for name, value in latency.items():
        setattr(backend, name, value)
    app = create_app(ServerOptions(model_name="fake", queue=queue), load=lambda: reranker)
    async with app.router.lifespan_context(app):
        while app.state.service.state.status == "loading":
            await asyncio.sleep(0.01)
        backend.calls = backend.pairs = 0  # not the warm-up
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as client:
            yield app, client, backend


class _SpyQueue(deque[Any]):
    """The batcher's queue, recording every request put in it."""

    seen = 0

    def append(self, entry: Any) -> None:
        self.seen += 1
        super().append(entry)


def _body(documents: list[str], **extra: object) -> dict[str, object]:
    return {"model": "fake", "query": "where do glaciers flow", "documents": documents, **extra}


def test_a_request_over_the_work_cap_is_413_before_it_is_queued(fake_model_dir: Path) -> None:
    async def run() -> None:
        async with _serving(fake_model_dir, QueueOptions(max_request_tokens=20_000)) as (app, client, backend):
            batcher = app.state.service.state.reranker.batcher
            spy = batcher._state.queue = _SpyQueue()
            refused = await client.post("/v2/rerank", json=_body([LONG] * 8))  # 96 windows, 49,152 tokens
            assert refused.status_code == 413, refused.text
            message = refused.json()["message"]
            # Counting stops once past the cap (here after 4 documents): the size named is what was counted by then.
            assert message.startswith("request: 24576 tokens of model work in 48 windows"), message
            assert "more than the limit of 20000" in message and "--max-request-tokens" in message
            assert spy.seen == 0 and backend.calls == 0  # never queued, never scored
            # The windows a document may have are bounded too, by the schema (422 naming the field).
            too_many = await client.post("/v1/rerank", json=_body(["d"], max_chunks_per_doc=MAX_CHUNKS_PER_DOC + 1))
            assert too_many.status_code == 422 and "max_chunks_per_doc" in too_many.text
            accepted = await client.post("/v2/rerank", json=_body([LONG, "short"]))
            assert accepted.status_code == 200 and spy.seen == 1
            info = (await client.get("/info")).json()["limits"]
            assert info["max_request_tokens"] == 20_000 and info["max_queue_tokens"] == 8 * 20_000
            text = (await client.get("/metrics")).text
            assert metric(text, "crossrank_refused_requests_total") == 1
            assert metric(text, "crossrank_max_request_tokens") == 20_000

    asyncio.run(run())


@pytest.mark.serial  # a time bound
def test_a_small_request_is_answered_within_the_caps_time_while_a_big_one_runs(fake_model_dir: Path) -> None:
    """Passes cost 20 µs a token (50,000 tokens/s); the cap is 50,000 tokens, one second of work."""
    rate, cap = 50_000, 50_000
    bound_s = cap / rate + 0.5  # the scoring call in progress, at most the cap, then its own pass

    async def run() -> None:
        queue = QueueOptions(max_request_tokens=cap, max_wait_ms=0)
        async with _serving(fake_model_dir, queue, latency_per_token=1 / rate) as (_app, client, backend):
            over = await client.post("/v2/rerank", json=_body([LONG] * 9))  # 55,296 tokens: refused at once
            assert over.status_code == 413
            big = asyncio.create_task(client.post("/v2/rerank", json=_body([LONG] * 8)))  # 49,152 tokens: ~1 s
            while backend.calls < 1:
                await asyncio.sleep(0.005)
            started = time.perf_counter()
            small = await client.post("/v2/rerank", json=_body(["glaciers flow downhill", "rivers"]))
            waited = time.perf_counter() - started
            assert small.status_code == 200
            assert waited < bound_s, f"a small request waited {waited:.2f} s behind a capped big one"
            assert (await big).status_code == 200
            text = (await client.get("/metrics")).text
            assert metric(text, "crossrank_throughput_tokens_per_second") > 0

    asyncio.run(run())


async def _post_then_disconnect(
    app: FastAPI, path: str, body: dict[str, object], disconnect_when: Callable[[], bool]
) -> list[MutableMapping[str, Any]]:
    """Call the ASGI app as a server would, and report ``http.disconnect`` once ``disconnect_when()`` holds."""
    raw = json.dumps(body).encode()
    sent: list[MutableMapping[str, Any]] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": raw, "more_body": False}
        while not disconnect_when():
            await asyncio.sleep(0.005)
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test"), (b"content-type", b"application/json"), (b"content-length", b"%d" % len(raw))],
        "client": ("127.0.0.1", 50000),
        "server": ("test", 80),
    }
    await app(scope, receive, send)
    return sent


def test_a_disconnected_clients_remaining_passes_are_not_run(fake_model_dir: Path) -> None:
    async def run() -> None:
        async with _serving(fake_model_dir, QueueOptions(max_wait_ms=0), latency=0.05) as (app, client, backend):
            body = _body([LONG] * 8)  # 96 windows: 6 passes of 16 (0.3 s)
            sent = await _post_then_disconnect(app, "/v2/rerank", body, lambda: backend.calls >= 1)
            assert sent[0]["status"] == 499
            await asyncio.sleep(0.4)  # as long as the remaining passes would have taken
            assert backend.calls <= 2  # the pass in progress when the client left (and none after it)
            text = (await client.get("/metrics")).text
            assert metric(text, "crossrank_dropped_requests_total") == 1
            assert metric(text, "crossrank_stopped_scoring_total") == 1
            assert metric(text, "crossrank_dropped_windows_total") == 96 - backend.pairs > 0

    asyncio.run(run())
