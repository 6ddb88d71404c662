"""Faults while serving: clients that vanish mid-request, SIGTERM under load, a backend that raises mid-batch (fake),
Redis going down and coming back under load, and corrupt model files at start.

The ONNX export cache on a full disk is tested in tests/backends/test_onnx_backend.py
(test_disk_full_while_exporting_is_a_clear_error: a clear BackendError, nothing half-written, exports once there is
room again).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import shutil
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest

from crossrank import Reranker
from crossrank.backends.base import Backend, EncodedBatch, WrappedBackend
from crossrank.engine.batcher import QueueOptions
from crossrank.server import ServerOptions, create_app
from redis_server import RedisServer, running_redis
from reliability.load import THREAD_POOL_HEADROOM, Body, ms, percentile, settle
from server_process import ServerProcess, free_port, metric, running_server

pytestmark = pytest.mark.slow
# The tests under load (marked serial) read latencies, descriptors and threads: tests/run.py runs them last, alone on
# the machine. A corrupt model's exit code and message need no such quiet.

QUERY = "what is a giant panda?"
DOCUMENTS = [
    "The giant panda is a bear native to South Central China.",
    "Pandas is a Python library for data analysis.",
    "Bamboo makes up most of the giant panda's diet.",
    "Berlin is the capital of Germany.",
    "Red pandas are not closely related to giant pandas.",
    "The violin is a string instrument.",
]


def _normal_bodies(n: int) -> list[Body]:
    """Small well-formed requests, each a distinct rotation of DOCUMENTS."""
    return [("/v2/rerank", {"query": QUERY, "documents": DOCUMENTS[i % 6 :] + DOCUMENTS[: i % 6]}) for i in range(n)]


def _expected(reranker: Reranker, documents: list[str]) -> dict[int, float]:
    return {r.index: r.relevance_score for r in reranker.rerank(QUERY, documents).results}


def _same_scores(answer: dict[str, Any], expected: dict[int, float]) -> bool:
    got = {r["index"]: r["relevance_score"] for r in answer["results"]}
    return got.keys() == expected.keys() and all(abs(got[i] - expected[i]) <= 1e-5 for i in got)


def _metrics(url: str) -> str:
    return httpx.get(url + "/metrics", timeout=30).text


def _requests(text: str, status: str, route: str = "/v2/rerank") -> float:
    return metric(text, "crossrank_requests_total", route=route, status=status)


# --- client disconnects -----------------------------------------------------------------------------------------------


def _abandon(port: int, body: dict[str, Any], after_s: float) -> bool:
    """Send ``body`` on a raw connection and close it ``after_s`` later; whether an answer had begun by then."""
    payload = json.dumps(body).encode()
    with socket.create_connection(("127.0.0.1", port)) as raw:
        raw.sendall(
            b"POST /v2/rerank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        time.sleep(after_s)
        raw.setblocking(False)
        try:
            return bool(raw.recv(1))
        except BlockingIOError:
            return False


@pytest.mark.serial
def test_clients_that_disconnect_mid_request_under_load_leave_the_others_unaffected(
    english_model_dir: Path, english_reranker: Reranker, record_figures: Callable[..., None]
) -> None:
    """40 clients vanish while queued or being scored, amid 8 steady clients: others get 200 and right scores."""
    abandoned, clients, seconds = 40, 8, 12.0
    big = {"query": "keep the worker busy", "documents": ["a document of some length, to be scored " * 6] * 48}
    bodies = _normal_bodies(24)
    expected = [_expected(english_reranker, b["documents"]) for _, b in bodies]
    with running_server(["-m", str(english_model_dir), "--device", "cpu", "--slow-ms", "100000"]) as server:
        before_text = _metrics(server.url)
        before = settle(server.url, server.process.pid)
        rng = random.Random(7)
        delays = [rng.uniform(0.02, 0.8) for _ in range(abandoned)]
        answered_first: list[bool] = []

        def vanish() -> None:
            for delay in delays:
                answered_first.append(_abandon(server.port, big, delay))

        async def steady() -> list[tuple[int, bool, float]]:
            results: list[tuple[int, bool, float]] = []
            t0 = time.perf_counter()

            async def client(c: int, http: httpx.AsyncClient) -> None:
                i = c
                while time.perf_counter() - t0 < seconds:
                    path, body = bodies[i % len(bodies)]
                    started = time.perf_counter()
                    response = await http.post(server.url + path, json=body)
                    right = response.status_code == 200 and _same_scores(response.json(), expected[i % len(bodies)])
                    results.append((response.status_code, right, time.perf_counter() - started))
                    i += clients

            async with httpx.AsyncClient(timeout=60) as http:
                await asyncio.gather(*(client(c, http) for c in range(clients)))
            return results

        vanisher = threading.Thread(target=vanish)
        vanisher.start()
        results = asyncio.run(steady())
        vanisher.join()
        after = settle(server.url, server.process.pid)
        after_text = _metrics(server.url)
        alive = httpx.post(server.url + "/v2/rerank", json=bodies[0][1], timeout=30)
        log = server.log()

    statuses = Counter(status for status, _, _ in results)
    dropped = metric(after_text, "crossrank_dropped_requests_total") - metric(
        before_text, "crossrank_dropped_requests_total"
    )
    logged_499 = _requests(after_text, "499") - _requests(before_text, "499")
    routed = sum(
        metric(after_text, "crossrank_requests_total", route="/v2/rerank", status=s)
        - metric(before_text, "crossrank_requests_total", route="/v2/rerank", status=s)
        for s in ("200", "499")
    )
    latencies = [s for _, _, s in results]
    record_figures(
        {
            "server": "MiniLM-L6 English, CPU, defaults",
            "steady clients": f"{clients} (closed loop, 6 documents each, {seconds:.0f} s)",
            "vanishing clients": f"{abandoned} requests of 48 documents, connection closed 20-800 ms after sending",
        },
        {
            "steady requests": len(results),
            "steady statuses": dict(statuses),
            "steady answers with the library's scores": sum(right for _, right, _ in results),
            "steady p50/p99 ms": f"{ms(percentile(latencies, 50))} / {ms(percentile(latencies, 99))}",
            "vanished before any answer byte": answered_first.count(False),
            "dropped (metric) / logged 499": f"{dropped:.0f} / {logged_499:.0f}",
            "fds / threads before, after": f"{before.fds}/{before.threads}, {after.fds}/{after.threads}",
            "server answers after": alive.status_code,
        },
    )
    assert statuses == {200: len(results)} and all(right for _, right, _ in results)
    assert dropped == logged_499 >= abandoned // 2  # most vanish while queued or scored
    assert logged_499 <= answered_first.count(False)
    assert routed == len(results) + abandoned  # every vanished request ended as 200 or 499, none lost or 5xx
    assert after.fds <= before.fds and after.threads <= before.threads + THREAD_POOL_HEADROOM
    assert alive.status_code == 200
    assert "Traceback" not in log


# --- SIGTERM under load -----------------------------------------------------------------------------------------------


@pytest.mark.serial
def test_sigterm_under_load_finishes_accepted_requests_and_refuses_new_connections(
    english_model_dir: Path, record_figures: Callable[..., None]
) -> None:
    """SIGTERM amid 8 clients (a new connection per request): every request the server took gets its 200; new
    connections are refused (or reset, if the kernel had queued them before the listener closed), except those
    accepted before the server handled the signal, which are served in full; the process exits after draining."""
    clients = 8
    bodies = [("/v2/rerank", {"query": f"{QUERY} {i}", "documents": DOCUMENTS * 3}) for i in range(64)]
    server = ServerProcess(["-m", str(english_model_dir), "--device", "cpu", "--slow-ms", "100000"]).wait_ready()
    outcomes: list[tuple[float, float, int | str]] = []  # (start, end, status or error class)
    terminated_at: list[float] = []

    async def client(c: int, http: httpx.AsyncClient) -> None:
        i = c
        while True:
            started = time.perf_counter()
            try:
                response = await http.post(server.url + bodies[i % 64][0], json=bodies[i % 64][1])
                outcome: int | str = response.status_code
            except httpx.TransportError as exc:
                outcome = type(exc).__name__
            outcomes.append((started, time.perf_counter(), outcome))
            if isinstance(outcome, str) or (terminated_at and time.perf_counter() - terminated_at[0] > 30):
                return
            i += clients

    async def scenario() -> None:
        # No keep-alive: each request opens its own connection, so "refused" is unambiguous.
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=60, limits=limits) as http:
            tasks = [asyncio.create_task(client(c, http)) for c in range(clients)]
            await asyncio.sleep(4)
            terminated_at.append(time.perf_counter())
            server.process.send_signal(signal.SIGTERM)
            await asyncio.gather(*tasks)

    try:
        asyncio.run(scenario())
        code = server.wait_exit(60)
        exited = time.perf_counter() - terminated_at[0]
        log = server.log()
    finally:
        server.stop()

    sigterm = terminated_at[0]
    in_flight = [o for s, e, o in outcomes if s < sigterm < e]
    after = Counter(o for s, _, o in outcomes if s >= sigterm)
    statuses = Counter(o for _, _, o in outcomes)
    logged = Counter(
        line["status"]
        for line in map(json.loads, (x for x in log.splitlines() if x.startswith('{"event": "request"')))
        if line["path"] == "/v2/rerank"
    )
    record_figures(
        {
            "server": "MiniLM-L6 English, CPU, --graceful-timeout 30 (default)",
            "load": f"{clients} closed-loop clients, 18 documents per request, a new connection per request",
            "signal": "SIGTERM 4 s into the load; each client stops at its first transport error",
        },
        {
            "requests": len(outcomes),
            "outcomes": dict(statuses),
            "in flight at SIGTERM": f"{len(in_flight)}: {dict(Counter(in_flight))}",
            "sent after SIGTERM": dict(after),
            "server log statuses": dict(logged),
            "exit code": code,
            "seconds from SIGTERM to exit": round(exited, 2),
        },
    )
    assert len(in_flight) >= clients // 2
    assert all(o == 200 for o in in_flight)
    # Before SIGTERM, and the requests it caught in flight: 200. After it: refused at connect, or a clean 503, or
    # reset (ReadError) when the connection sat in the kernel's accept queue as the listener closed, or closed
    # unanswered (RemoteProtocolError) when uvicorn had accepted it but not yet read a request: the server never
    # took those (the log check below proves none was processed), and a client may retry them elsewhere. The
    # server handles the signal a moment after it is sent: a connection it accepted in between is served in full.
    assert all(o == 200 for s, _, o in outcomes if s < sigterm)
    assert set(after) <= {200, "ConnectError", "ReadError", "RemoteProtocolError", 503}
    assert set(after) - {200}  # new connections did get refused
    assert logged == {200: statuses[200]}  # the server answered every request it took, all 200
    assert code in (0, -signal.SIGTERM)  # uvicorn re-raises SIGTERM after draining, as supervisors expect
    assert "Traceback" not in log


# --- backend raising mid-batch (fake fault) -------------------------------------------------------------------------

MARKER = "xylophonequagmire"


class _PoisonedBackend(WrappedBackend):
    """The real backend, except that a forward pass holding the marker's token ids raises (a fake runtime fault)."""

    def __init__(self, inner: Backend, marker_ids: list[int]) -> None:
        super().__init__(inner)
        self._marker = np.asarray(marker_ids)
        self.passes: list[tuple[int, bool]] = []  # (pairs, raised)

    def _poisoned(self, row: npt.NDArray[np.int64]) -> bool:
        n = len(self._marker)
        windows = np.lib.stride_tricks.sliding_window_view(row, n)
        return bool((windows == self._marker).all(axis=1).any())

    def forward(self, batch: EncodedBatch) -> npt.NDArray[np.float32]:
        raised = any(self._poisoned(row) for row in batch.input_ids)
        self.passes.append((batch.size, raised))
        if raised:
            raise RuntimeError("fake backend fault: a poisoned pair reached the model")
        return self.inner.forward(batch)


@dataclasses.dataclass
class _InProcessServer:
    url: str
    server: Any
    thread: threading.Thread


@pytest.fixture
def poisoned(english_model_dir: Path) -> Iterator[tuple[_InProcessServer, _PoisonedBackend]]:
    """The app in this process (uvicorn on a thread, 127.0.0.1) over the English model with a poisoned backend."""
    import uvicorn
    from transformers import AutoTokenizer

    reranker = Reranker(str(english_model_dir), device="cpu", dtype="float32")
    marker_ids = AutoTokenizer.from_pretrained(str(english_model_dir))(MARKER, add_special_tokens=False)["input_ids"]
    backend = _PoisonedBackend(reranker.scorer.backend, marker_ids)
    loaded = reranker._loaded
    reranker._loaded = dataclasses.replace(loaded, scorer=loaded.scorer.with_backend(backend))  # type: ignore[arg-type]
    # A long wait so that the concurrent requests below share their scoring calls.
    options = ServerOptions(model_name="poisoned", queue=QueueOptions(max_wait_ms=300), slow_ms=100000)
    app = create_app(options, lambda: reranker)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/ready", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    try:
        yield _InProcessServer(url, server, thread), backend
    finally:
        server.should_exit = True
        thread.join(60)


@pytest.mark.serial
def test_backend_fault_fake_fails_only_the_poisoned_requests_with_503(
    poisoned: tuple[_InProcessServer, _PoisonedBackend],
    english_reranker: Reranker,
    record_figures: Callable[..., None],
) -> None:
    """A backend raising mid-batch (fake): only the requests holding the bad pair get 503 (JSON), the rest 200."""
    server, backend = poisoned
    backend.passes.clear()
    sends: list[tuple[str, dict[str, Any], bool]] = []
    for i in range(16):
        documents = DOCUMENTS[i % 6 :] + DOCUMENTS[: i % 6]
        bad = i % 4 == 1
        if bad:
            documents = [*documents[:3], f"a {MARKER} document", *documents[3:]]
        if i % 2:
            sends.append(("/rerank", {"query": QUERY, "texts": documents, "return_text": False}, bad))
        else:
            sends.append(("/v2/rerank", {"query": QUERY, "documents": documents}, bad))

    async def all_at_once() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as http:
            return await asyncio.gather(*(http.post(server.url + p, json=b) for p, b, _ in sends))

    responses = asyncio.run(all_at_once())
    text = _metrics(server.url)
    health = httpx.get(server.url + "/health").status_code
    after = httpx.post(server.url + "/v2/rerank", json={"query": QUERY, "documents": DOCUMENTS}, timeout=30)

    wrong: list[str] = []
    for (path, body, bad), response in zip(sends, responses, strict=True):
        documents = body.get("documents") or body["texts"]
        if bad:
            # The runtime's text stays in the server's log; the client gets the request id to look it up by.
            error_keys = {"message", "request_id"} if path.startswith("/v") else {"error", "error_type", "request_id"}
            if response.status_code != 503 or set(response.json()) != error_keys:
                wrong.append(f"poisoned {path}: {response.status_code} {response.text[:200]}")
            elif "fake backend fault" in response.text:
                wrong.append(f"poisoned {path}: the runtime's message reached the client: {response.text[:200]}")
            elif response.json()["request_id"] != response.headers.get("x-request-id"):
                wrong.append(f"poisoned {path}: no request id to find it in the log: {response.text[:200]}")
            continue
        expected = _expected(english_reranker, documents)
        results = response.json() if path == "/rerank" else response.json().get("results")
        if path == "/rerank" and response.status_code == 200:
            results = [{"index": r["index"], "relevance_score": r["score"]} for r in results]
        if response.status_code != 200 or not _same_scores({"results": results}, expected):
            wrong.append(f"clean {path}: {response.status_code} {response.text[:200]}")
    failed_passes = [pairs for pairs, raised in backend.passes if raised]
    shared_failures = sum(pairs > 7 for pairs in failed_passes)  # a failing pass held more than one request's pairs
    statuses = Counter((bad, r.status_code) for (_, _, bad), r in zip(sends, responses, strict=True))
    record_figures(
        {
            "server": "create_app in-process (uvicorn thread) over MiniLM-L6 with a fake backend that raises on a "
            "marker token sequence; --max-wait-ms 300 so the requests share scoring calls",
            "requests": f"{len(sends)} at once, 4 poisoned, on /v2/rerank and /rerank",
        },
        {
            "statuses clean": {s: n for (bad, s), n in statuses.items() if not bad},
            "statuses poisoned": {s: n for (bad, s), n in statuses.items() if bad},
            "forward passes / raised / raised with others' pairs": (
                f"{len(backend.passes)} / {len(failed_passes)} / {shared_failures}"
            ),
            "wrong answers": len(wrong),
            "health after": health,
            "503 counted": _requests(text, "503") + _requests(text, "503", "/rerank"),
        },
    )
    assert not wrong, "\n".join(wrong)
    assert shared_failures >= 1  # the fault hit a batch shared with clean requests, which were re-scored alone
    assert health == 200 and after.status_code == 200
    assert _requests(text, "503") + _requests(text, "503", "/rerank") == 4


# --- Redis down and back under load -----------------------------------------------------------------------------------


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    pytest.importorskip("redis", reason="the redis extra is in the dev extra")
    with running_redis(tmp_path) as server:
        yield server


@pytest.mark.serial
def test_redis_down_and_back_under_load_costs_no_request(
    redis: RedisServer, english_model_dir: Path, record_figures: Callable[..., None]
) -> None:
    """Redis killed for 5 s and restarted amid 4 clients: every request 200, fast during the outage, hits resume."""
    clients = 4
    pool = [("/v2/rerank", {"query": f"{QUERY} {i % 12}", "documents": DOCUMENTS}) for i in range(12)]
    args = ["-m", str(english_model_dir), "--device", "cpu", "--cache-url", redis.url(), "--slow-ms", "100000"]
    phases: dict[str, list[tuple[int, float]]] = {"up": [], "down": [], "back": []}
    phase = ["up"]
    with running_server(args) as server:

        async def load(stop: asyncio.Event) -> None:
            async def client(c: int, http: httpx.AsyncClient) -> None:
                i = c
                while not stop.is_set():
                    path, body = pool[i % len(pool)]
                    started = time.perf_counter()
                    response = await http.post(server.url + path, json=body)
                    phases[phase[0]].append((response.status_code, time.perf_counter() - started))
                    i += clients

            async with httpx.AsyncClient(timeout=60) as http:
                await asyncio.gather(*(client(c, http) for c in range(clients)))

        def hits() -> float:
            return metric(_metrics(server.url), "crossrank_cache_hits_total", cache="redis")

        async def scenario() -> tuple[float, float]:
            stop = asyncio.Event()
            running = asyncio.create_task(load(stop))
            await asyncio.sleep(4)
            phase[0] = "down"
            await asyncio.to_thread(redis.stop)
            await asyncio.sleep(5)
            hits_down = await asyncio.to_thread(hits)
            await asyncio.to_thread(redis.start)
            phase[0] = "back"
            restarted = time.perf_counter()
            while await asyncio.to_thread(hits) <= hits_down and time.perf_counter() - restarted < 30:
                await asyncio.sleep(0.2)
            recovered = time.perf_counter() - restarted
            await asyncio.sleep(2)
            stop.set()
            await running
            return hits_down, recovered

        hits_down, recovered = asyncio.run(scenario())
        text = _metrics(server.url)
        log = server.log()

    def summary(rows: list[tuple[int, float]]) -> dict[str, Any]:
        latencies = [s for _, s in rows]
        return {
            "requests": len(rows),
            "statuses": dict(Counter(s for s, _ in rows)),
            "p50/p99 ms": f"{ms(percentile(latencies, 50))} / {ms(percentile(latencies, 99))}",
        }

    record_figures(
        {
            "server": "MiniLM-L6 English, CPU, --cache-url redis://127.0.0.1 (a real redis-server)",
            "load": f"{clients} closed-loop clients over 12 distinct requests (repeats hit the cache)",
            "fault": "redis-server stopped 4 s in, started again on the same port 5 s later",
        },
        {
            **{f"{name}: {k}": v for name, rows in phases.items() for k, v in summary(rows).items()},
            "cache errors counted": metric(text, "crossrank_cache_errors_total", cache="redis"),
            "cache hits before the restart": hits_down,
            "seconds until cache hits again": round(recovered, 2),
        },
    )
    for rows in phases.values():
        assert rows and all(status == 200 for status, _ in rows)
    assert metric(text, "crossrank_cache_errors_total", cache="redis") >= 1
    assert recovered < 30  # the cache came back without a restart
    # Without its cache the server computes every request: slower than hits, but no request waits for a dead Redis.
    assert percentile([s for _, s in phases["down"]], 99) < 5
    assert "Traceback" not in log


# --- corrupt model at start -------------------------------------------------------------------------------------------

SMALL_FILES = ("config.json", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt")


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garbage(path: Path) -> None:
    path.write_bytes(random.Random(3).randbytes(4096))


CORRUPTIONS: dict[str, tuple[str, Callable[[Path], None], str]] = {
    # name: (file, how, what the message must say)
    "truncated weights": ("model.safetensors", _truncate, "truncated"),
    "garbage weights": ("model.safetensors", _garbage, "corrupt"),
    "garbage config": ("config.json", _garbage, "config.json"),
    "truncated tokenizer": ("tokenizer.json", _truncate, "tokenizer"),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_corrupt_model_at_start_exits_3_naming_the_file_and_the_fix(
    case: str, tmp_path: Path, english_model_dir: Path, record_figures: Callable[..., None]
) -> None:
    """A corrupt model folder: `crossrank serve` exits 3 at once with a message naming the file and the fix."""
    name, corrupt, words = CORRUPTIONS[case]
    folder = tmp_path / "model"
    folder.mkdir()
    for file in (*SMALL_FILES, "model.safetensors"):
        shutil.copy(english_model_dir / file, folder / file)
    corrupt(folder / name)
    started = time.perf_counter()
    server = ServerProcess(["-m", str(folder), "--device", "cpu"])
    try:
        code = server.wait_exit(120)
        seconds = time.perf_counter() - started
        log = server.log()
    finally:
        server.stop()
    error = next((line for line in log.splitlines() if line.startswith("error:")), "")
    fix = next((line for line in log.splitlines() if line.startswith("fix:")), "")
    record_figures(
        {"model": f"MiniLM-L6 copy with {case} ({name})"},
        {
            "exit code": code,
            "seconds to exit": round(seconds, 2),
            "error": error.removeprefix("error: ")[:200],
            "fix": fix.removeprefix("fix: ")[:200],
        },
    )
    assert code == 3, log
    assert name in error and words in log, log
    assert fix, log
    assert "Traceback" not in log
