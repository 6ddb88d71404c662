"""Concurrency, backpressure, limits, auth, disconnects and metrics of the real server process."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from conftest import STRICT_KEYS
from crossrank import Reranker
from server_process import ServerProcess, metric

pytestmark = pytest.mark.slow


def _queries(n: int) -> list[tuple[str, list[str]]]:
    topics = ["panda", "berlin", "python", "coffee", "volcano", "violin", "glacier", "tennis", "saturn", "bread"]
    return [
        (
            f"what is {topics[i % 10]} number {i}?",
            [
                f"{topics[(i + j) % 10]} fact {j} of {i}: " + "word " * (3 + (i * 7 + j * 5) % 40)
                for j in range(1 + i % 6)
            ],
        )
        for i in range(n)
    ]


async def _post_all(
    url: str, bodies: list[dict[str, object]], headers: dict[str, str] | None = None
) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=len(bodies))) as client:
        return await asyncio.gather(*(client.post(url, json=b, headers=headers) for b in bodies))


@pytest.fixture
def server(open_server: ServerProcess) -> ServerProcess:
    return open_server


def _auth(key: str = STRICT_KEYS[0]) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _metrics(server: ServerProcess, headers: dict[str, str] | None = None) -> str:
    return httpx.get(server.url + "/metrics", headers=headers).text


def test_fifty_concurrent_requests_get_the_librarys_scores_in_shared_batches(
    server: ServerProcess, english_reranker: Reranker
) -> None:
    cases = _queries(50)
    before = _metrics(server)
    responses = asyncio.run(
        _post_all(server.url + "/v2/rerank", [{"model": "m", "query": q, "documents": d} for q, d in cases])
    )
    after = _metrics(server)
    for (query, documents), response in zip(cases, responses, strict=True):
        assert response.status_code == 200, response.text
        expected = {r.index: r.relevance_score for r in english_reranker.rerank(query, documents).results}
        got = {r["index"]: r["relevance_score"] for r in response.json()["results"]}
        assert got.keys() == expected.keys()
        for index, score in got.items():
            assert score == pytest.approx(expected[index], abs=1e-5)
    pairs = sum(len(d) for _, d in cases)
    assert metric(after, "crossrank_pairs_scored_total") - metric(before, "crossrank_pairs_scored_total") == pairs
    passes = metric(after, "crossrank_forward_passes_total") - metric(before, "crossrank_forward_passes_total")
    assert passes < len(cases)  # requests shared forward passes
    assert metric(after, "crossrank_requests_total", route="/v2/rerank", status="200") >= 50


def test_metrics_content(server: ServerProcess) -> None:
    before = _metrics(server)
    # 2,000 tokens: the default chunking reads them all in windows; max_tokens_per_doc=100 cuts 1,900 of them.
    body = {"model": "m", "query": "panda", "documents": ["panda " * 2000, "x"], "max_tokens_per_doc": 100}
    assert httpx.post(server.url + "/v2/rerank", json=body, timeout=30).status_code == 200
    assert httpx.post(server.url + "/rerank", json={"query": "panda", "texts": ["x"]}, timeout=30).status_code == 200
    text = _metrics(server)
    for name in (
        "crossrank_request_duration_seconds_bucket",
        "crossrank_queue_duration_seconds_bucket",
        "crossrank_batch_pairs_bucket",
        "crossrank_batch_tokens_bucket",
        "crossrank_inference_duration_seconds_bucket",
        "crossrank_request_documents_bucket",
        "crossrank_queue_pairs",
        "crossrank_queue_requests",
    ):
        assert name in text, name
    truncated = metric(text, "crossrank_truncated_pairs_total") - metric(before, "crossrank_truncated_pairs_total")
    lost = metric(text, "crossrank_truncated_tokens_total") - metric(before, "crossrank_truncated_tokens_total")
    assert (truncated, lost) == (1, 1900)
    assert metric(text, "crossrank_ready") == 1
    assert metric(text, "crossrank_requests_total", route="/rerank", status="200") >= 1


def test_one_json_log_line_per_request(server: ServerProcess) -> None:
    httpx.post(server.url + "/v2/rerank", json={"query": "log me", "documents": ["a", "b", "c"]}, timeout=30)
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith('{"event": "request"')]
    mine = [x for x in lines if x["path"] == "/v2/rerank" and x.get("documents") == 3]
    assert mine
    assert {"status", "latency_ms", "tokens", "queue_ms", "inference_ms", "request_id"} <= set(mine[-1])


def test_overload_answers_429_with_retry_after_and_stays_healthy(strict_server: ServerProcess) -> None:
    before = _metrics(strict_server, _auth())
    documents = ["a longer document about many things " * 8] * 90  # 90 pairs; the queue holds 100
    bodies = [{"query": f"query {i}", "documents": documents} for i in range(12)]
    responses = asyncio.run(_post_all(strict_server.url + "/v2/rerank", bodies, _auth()))
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 429}
    assert codes.count(429) >= 1 and codes.count(200) >= 1
    for r in responses:
        if r.status_code == 429:
            assert int(r.headers["retry-after"]) >= 1
            assert "queue" in r.json()["message"]
    after = _metrics(strict_server, _auth())
    refused = metric(after, "crossrank_requests_total", route="/v2/rerank", status="429")
    assert refused - metric(before, "crossrank_requests_total", route="/v2/rerank", status="429") == codes.count(429)
    overloaded = metric(after, "crossrank_overloaded_requests_total")
    assert overloaded - metric(before, "crossrank_overloaded_requests_total") == codes.count(429)
    assert httpx.get(strict_server.url + "/health").status_code == 200
    ok = httpx.post(strict_server.url + "/v2/rerank", json={"query": "q", "documents": ["d"]}, headers=_auth())
    assert ok.status_code == 200


def test_limits_are_413_naming_the_limit_and_the_server_keeps_serving(strict_server: ServerProcess) -> None:
    cases = [
        ({"query": "q", "documents": ["d"] * 101}, "100", "documents"),
        ({"query": "q", "documents": ["ok", "x" * 1001]}, "1000", "documents[1]"),
        ({"query": "q" * 51, "documents": ["ok"]}, "50", "query"),
        ({"query": "q", "documents": ["y" * 900] * 70}, "60000", "body"),
    ]
    for body, limit, field in cases:
        r = httpx.post(strict_server.url + "/v2/rerank", json=body, headers=_auth(), timeout=30)
        assert r.status_code == 413, r.text
        assert limit in r.json()["message"] and field in r.json()["message"]

    # A body streamed without Content-Length is cut off at the limit too.
    def chunks() -> Iterator[bytes]:
        yield b'{"query": "q", "texts": ["'
        for _ in range(700):
            yield b"x" * 100
        yield b'"]}'

    streamed = httpx.post(
        strict_server.url + "/rerank",
        content=chunks(),
        headers={"content-type": "application/json", **_auth()},
        timeout=30,
    )
    assert streamed.status_code == 413
    assert streamed.json()["error_type"] == "payload_limit"
    ok = httpx.post(strict_server.url + "/v2/rerank", json={"query": "q", "documents": ["d"]}, headers=_auth())
    assert ok.status_code == 200


def test_auth_on_every_route_but_health(strict_server: ServerProcess) -> None:
    url, body = strict_server.url, {"query": "q", "documents": ["d"]}
    for path in ("/v2/rerank", "/v1/rerank"):
        denied = httpx.post(url + path, json=body)
        assert denied.status_code == 401
        assert denied.headers["www-authenticate"] == "Bearer"
        assert "API key" in denied.json()["message"]
    tei = httpx.post(url + "/rerank", json={"query": "q", "texts": ["d"]}, headers={"Authorization": "Bearer no"})
    assert tei.status_code == 401 and tei.json()["error_type"] == "auth"
    for path in ("/ready", "/info", "/metrics", "/openapi.json", "/docs"):
        assert httpx.get(url + path).status_code == 401, path
    assert httpx.get(url + "/health").status_code == 200
    for key in STRICT_KEYS:
        assert httpx.post(url + "/v2/rerank", json=body, headers=_auth(key)).status_code == 200, key
    for header in ("key-one", "Bearer key-on", "Bearer key-one2", "Basic key-one", "Bearer"):
        assert httpx.post(url + "/v2/rerank", json=body, headers={"Authorization": header}).status_code == 401
    assert all(key not in strict_server.log() for key in STRICT_KEYS)


def test_cors_only_for_the_configured_origin(strict_server: ServerProcess, server: ServerProcess) -> None:
    preflight = {"Origin": "http://app.example", "Access-Control-Request-Method": "POST"}
    allowed = httpx.options(strict_server.url + "/v2/rerank", headers=preflight)  # preflights carry no key
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "http://app.example"
    other = httpx.options(strict_server.url + "/v2/rerank", headers={**preflight, "Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    answer = httpx.post(
        strict_server.url + "/v2/rerank",
        json={"query": "q", "documents": ["d"]},
        headers={"Origin": "http://app.example", **_auth()},
    )
    assert answer.headers["access-control-allow-origin"] == "http://app.example"
    no_cors = httpx.post(server.url + "/v2/rerank", json={"query": "q", "documents": ["d"]}, headers={"Origin": "x"})
    assert "access-control-allow-origin" not in no_cors.headers


def test_a_client_that_disconnects_has_its_queued_work_dropped(server: ServerProcess) -> None:
    before = _metrics(server)
    big = {"query": "keep the worker busy", "documents": ["a document of some length " * 20] * 80}

    async def scenario() -> int:
        async with httpx.AsyncClient(timeout=120) as client:
            busy = asyncio.create_task(client.post(server.url + "/v2/rerank", json=big))
            await _until(lambda: metric(_metrics(server), "crossrank_requests_in_flight") == 1)
            payload = json.dumps({"query": "gone", "documents": ["x"] * 7}).encode()
            with socket.create_connection(("127.0.0.1", server.port)) as raw:
                raw.sendall(
                    b"POST /v2/rerank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(payload)}\r\n\r\n".encode()
                    + payload
                )
                await _until(lambda: metric(_metrics(server), "crossrank_queue_requests") == 1)
            assert not busy.done(), "the busy request finished too soon to test a queued drop"
            return (await busy).status_code

    assert asyncio.run(scenario()) == 200
    asyncio.run(_until(lambda: metric(_metrics(server), "crossrank_dropped_requests_total") >= 1))
    after = _metrics(server)
    assert metric(after, "crossrank_dropped_requests_total") - metric(before, "crossrank_dropped_requests_total") == 1
    scored = metric(after, "crossrank_pairs_scored_total") - metric(before, "crossrank_pairs_scored_total")
    assert scored == 80  # the 7 dropped pairs never reached the model
    assert metric(after, "crossrank_requests_total", route="/v2/rerank", status="499") >= 1


async def _until(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(condition):
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def test_slow_requests_warn_and_count(server: ServerProcess) -> None:
    before = metric(_metrics(server), "crossrank_slow_requests_total", route="/v2/rerank")
    httpx.post(server.url + "/v2/rerank", json={"query": "slow", "documents": ["d", "e"]}, timeout=30)
    assert metric(_metrics(server), "crossrank_slow_requests_total", route="/v2/rerank") == before + 1
    slow = [json.loads(line) for line in server.log().splitlines() if '"slow": true' in line]
    assert slow and slow[-1]["path"] == "/v2/rerank" and slow[-1]["slow_ms"] == 0


def test_sigterm_drains_in_flight_requests(english_model_dir: Path) -> None:
    server = ServerProcess(["-m", str(english_model_dir), "--device", "cpu"]).wait_ready()
    body = {"query": "drain", "documents": ["a document to score before exiting " * 10] * 40}

    async def scenario() -> list[int]:
        async with httpx.AsyncClient(timeout=120) as client:
            tasks = [asyncio.create_task(client.post(server.url + "/v2/rerank", json=body)) for _ in range(3)]
            await _until(lambda: metric(_metrics(server), "crossrank_requests_in_flight") == 3)
            server.process.terminate()
            return [(await t).status_code for t in tasks]

    try:
        assert asyncio.run(scenario()) == [200, 200, 200]
        # uvicorn re-raises the signal after its graceful shutdown, as supervisors expect.
        assert server.wait_exit() in (0, -signal.SIGTERM)
        with pytest.raises(httpx.TransportError):
            httpx.get(server.url + "/health", timeout=2)
    finally:
        server.stop()


def test_missing_model_exits_3_with_the_fix(tmp_path: Path) -> None:
    server = ServerProcess(["-m", str(tmp_path / "no-such-model"), "--device", "cpu"])
    try:
        assert server.wait_exit() == 3
        log = server.log()
        assert str(tmp_path / "no-such-model") in log and "Fix:" in log
    finally:
        server.stop()
