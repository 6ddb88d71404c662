"""The server's edges (issue 21): bounded input, strict flags, no empty keys, no leaks, offline docs, timeouts.

Fast tests drive the app in process on the fake backend, or the command through typer's ``CliRunner`` with
uvicorn stopped before it serves; the connection limits need a real server and sockets (marked slow).
"""

from __future__ import annotations

import json
import logging
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient
from typer.testing import CliRunner, Result

from crossrank import Reranker
from crossrank.backends.fake import FakeBackend
from crossrank.cli import app as cli_app
from crossrank.config import Aggregation
from crossrank.engine.cache import CachedScorer, LRUScoreCache
from crossrank.errors import ConfigError, ModelError
from crossrank.server import ServerOptions, create_app
from crossrank.server.options import public_model_name
from crossrank.settings import Settings
from server_process import running_server

QUERY = "what is panda?"
DOCS = ["The giant panda is a bear native to China.", "Pandas is a Python library.", "bamboo"]


def _ready(client: TestClient) -> None:
    deadline = time.monotonic() + 60
    while client.get("/ready").status_code != 200:
        assert time.monotonic() < deadline, client.get("/info").json()
        time.sleep(0.02)


@pytest.fixture(scope="module")
def served(fake_model_dir: Path) -> Iterator[tuple[TestClient, Reranker]]:
    """The app as `crossrank serve -m FOLDER` builds its options (no --served-model-name), on the fake backend."""
    reranker = Reranker(str(fake_model_dir), backend="fake")
    options = ServerOptions.from_settings(Settings(model=str(fake_model_dir)))
    with TestClient(create_app(options, load=lambda: reranker)) as client:
        _ready(client)
        yield client, reranker


# Item 5: an aggregate's K past Python's int-string limit was a 500 with two tracebacks.


@pytest.mark.parametrize("path", ["/rerank", "/v2/rerank"])
def test_a_huge_topk_mean_is_a_422_naming_aggregate(served: tuple[TestClient, Reranker], path: str) -> None:
    client, _ = served
    huge = "topk_mean:" + "9" * 5000
    body: dict[str, Any] = {"query": QUERY, "aggregate": huge}
    body.update({"texts": DOCS} if path == "/rerank" else {"model": "m", "documents": DOCS})
    response = client.post(path, json=body)
    assert response.status_code == 422, response.text
    assert "aggregate" in response.text
    assert client.post(path, json={**body, "aggregate": "topk_mean:999999"}).status_code == 200


@pytest.mark.parametrize(
    "text",
    ["topk_mean:" + "9" * 5000, "topk_mean:1234567", "topk_mean:²", "topk_mean:0"],
    ids=["5000-digits", "7-digits", "superscript", "zero"],
)
def test_aggregation_parse_refuses_over_long_or_odd_k_with_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match="aggregate"):
        Aggregation.parse(text)
    assert Aggregation.parse("topk_mean:999999").k == 999_999


# Item 6: every door flag is validated as its variable is, before uvicorn starts.


def _serve(args: list[str], monkeypatch: pytest.MonkeyPatch, env: dict[str, str] | None = None) -> Result:
    def never(*_: object, **__: object) -> None:
        raise AssertionError("uvicorn started")

    monkeypatch.setattr(uvicorn.Server, "run", never)
    return CliRunner().invoke(cli_app, ["serve", *args], env={"COLUMNS": "200", **(env or {})})


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--port", "99999"),
        ("--max-body-bytes", "-1"),
        ("--max-documents", "0"),
        ("--graceful-timeout", "-1"),
        ("--max-connections", "0"),
        ("--keep-alive-timeout", "0"),
        ("--header-timeout", "0"),
        ("--body-timeout", "-1"),
    ],
)
def test_bad_serve_flags_exit_2_naming_the_flag(
    fake_model_dir: Path, monkeypatch: pytest.MonkeyPatch, flag: str, value: str
) -> None:
    out = _serve(["-m", str(fake_model_dir), "--backend", "fake", flag, value], monkeypatch)
    assert out.exit_code == 2, out.output
    assert flag in out.stderr, out.stderr
    assert "Traceback" not in out.output


# Item 7: an empty key turned auth "on" while the bare `Authorization: Bearer` passed.


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--api-key", ""], {}),
        (["--api-key", "good", "--api-key", " "], {}),
        ([], {"CROSSRANK_API_KEY": ""}),
        ([], {"CROSSRANK_API_KEY": "a,,b"}),
    ],
)
def test_empty_api_keys_are_refused(
    fake_model_dir: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str]
) -> None:
    out = _serve(["-m", str(fake_model_dir), "--backend", "fake", *args], monkeypatch, env)
    assert out.exit_code == 2, out.output
    assert "empty" in out.stderr and "fix:" in out.stderr, out.stderr


def test_an_empty_key_is_refused_by_the_options_too() -> None:
    with pytest.raises(ConfigError, match="empty"):
        ServerOptions(model_name="m", api_keys=("",))


def test_binding_a_public_address_without_a_key_warns(
    fake_model_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(uvicorn.Server, "run", lambda *_, **__: None)  # bound, never served
    access = logging.getLogger("crossrank.server.access")  # serve gives it a handler on CliRunner's stderr
    monkeypatch.setattr(access, "handlers", list(access.handlers))
    monkeypatch.setattr(access, "propagate", access.propagate)
    base = ["serve", "-m", str(fake_model_dir), "--backend", "fake", "--port", "0"]
    with caplog.at_level(logging.WARNING, logger="crossrank"):
        CliRunner().invoke(cli_app, [*base, "--host", "0.0.0.0"])
    assert "without an API key" in caplog.text and "reverse proxy" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="crossrank"):
        CliRunner().invoke(cli_app, [*base, "--host", "127.0.0.1"])
        CliRunner().invoke(cli_app, [*base, "--host", "0.0.0.0", "--api-key", "k"])
    assert "without an API key" not in caplog.text


# Item 11: no local paths or raw exception text in answers.


def test_the_model_is_named_by_its_folder_never_its_path(
    served: tuple[TestClient, Reranker], fake_model_dir: Path
) -> None:
    client, _ = served
    answer = client.post("/v1/rerank", json={"model": "x", "query": QUERY, "documents": DOCS}).json()
    assert answer["model"] == fake_model_dir.name
    info = client.get("/info")
    assert info.json()["model_id"] == fake_model_dir.name
    assert "model_path" not in info.json()
    assert str(fake_model_dir) not in info.text and str(fake_model_dir.parent) not in info.text
    assert public_model_name("BAAI/bge-reranker-v2-m3") == "BAAI/bge-reranker-v2-m3"
    assert public_model_name(str(fake_model_dir) + "/") == fake_model_dir.name
    named = ServerOptions.from_settings(Settings(model=str(fake_model_dir), served_model_name="ours"))
    assert named.model_name == "ours"


def test_a_backend_failure_answers_a_request_id_not_the_exception_text(
    served: tuple[TestClient, Reranker], caplog: pytest.LogCaptureFixture
) -> None:
    client, reranker = served
    backend = reranker.scorer.backend
    assert isinstance(backend, FakeBackend)
    backend.fail_all = True
    try:
        with caplog.at_level(logging.WARNING, logger="crossrank"):
            tei = client.post("/rerank", json={"query": "a new query", "texts": ["a new document"]})
            cohere = client.post("/v2/rerank", json={"model": "m", "query": "another", "documents": ["new"]})
    finally:
        backend.fail_all = False
    for response in (tei, cohere):
        assert response.status_code == 503, response.text
        request_id = response.headers["x-request-id"]
        assert response.json()["request_id"] == request_id
        assert request_id in response.text and "failure injected" not in response.text
        assert request_id in caplog.text  # the details are in the log, under the same id
    assert "failure injected" in caplog.text


def test_a_failed_load_is_not_described_to_clients(tmp_path: Path) -> None:
    secret = str(tmp_path / "private" / "models")

    def load() -> Reranker:
        raise ModelError(f"no model at {secret}")

    with TestClient(create_app(ServerOptions(model_name="m"), load=load)) as client:
        deadline = time.monotonic() + 30
        while (health := client.get("/health")).status_code == 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert health.status_code == 503 and health.json()["error"] == "the model failed to load"
        rerank = client.post("/rerank", json={"query": "q", "texts": ["d"]})
        assert rerank.status_code == 503
        assert secret not in health.text + rerank.text + client.get("/info").text


# Item 12: /docs and /redoc work offline.


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_use_no_external_url(served: tuple[TestClient, Reranker], page: str) -> None:
    client, _ = served
    html = client.get(page)
    assert html.status_code == 200
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']|url: *["']([^"']+)["']|spec-url=["']([^"']+)["']""", html.text)
    found = [next(u for u in group if u) for group in urls]
    assert found, html.text
    assert not [u for u in found if re.match(r"(https?:)?//", u)], found
    for url in found:
        assert client.get(url).status_code == 200, url


# Item 10: the Redis URL's credentials are never logged.


def test_a_redis_url_is_logged_without_its_password(fake_model_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("redis")
    from crossrank.engine.redis_cache import redact_url

    assert redact_url("redis://user:s3cret@cache:6379/0") == "redis://***@cache:6379/0"
    assert redact_url("rediss://:s3cret@cache/1?ssl_cert_reqs=none") == "rediss://***@cache/1?ssl_cert_reqs=none"
    assert redact_url("redis://cache:6379/0?password=s3cret") == "redis://cache:6379/0?password=***"
    assert redact_url("redis://cache:6379/0") == "redis://cache:6379/0"
    with socket.socket() as closed:  # a port nothing listens on: the cache fails at once
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with (
        caplog.at_level(logging.WARNING, logger="crossrank"),
        Reranker(str(fake_model_dir), backend="fake", cache_url=f"redis://:s3cret@127.0.0.1:{port}/0") as rr,
    ):
        assert len(rr.rerank(QUERY, DOCS).results) == len(DOCS)
    assert "unavailable" in caplog.text and "s3cret" not in caplog.text


def test_cached_rows_of_the_wrong_shape_are_misses_counted_and_replaced(fake_model_dir: Path) -> None:
    with Reranker(str(fake_model_dir), backend="fake", cache_size=100) as rr:
        scorer = rr.scorer
        assert isinstance(scorer, CachedScorer) and isinstance(scorer.cache, LRUScoreCache)
        first = [(r.index, r.score) for r in rr.rerank(QUERY, DOCS).results]
        keys = list(scorer.cache._entries)
        garbage: list[Any] = [[1.0], [0.5, [0, 1, 2], 1], ["x", [0, 1], 1], [0.5, [0, 1], 2**40], {"a": 1}]
        scorer.cache.put_many(list(zip(keys, garbage, strict=False)))
        errors = scorer.cache.stats.errors
        again = rr.rerank(QUERY, DOCS)
        assert [(r.index, r.score) for r in again.results] == first
        assert again.usage.cached_documents == 0 and scorer.cache.stats.errors == errors + len(DOCS)
        assert rr.rerank(QUERY, DOCS).usage.cached_documents == len(DOCS)  # replaced by good rows


# Item 9: idle connections, slow headers and slow bodies are closed (a real server, real sockets).


def _closed_within(sock: socket.socket, seconds: float) -> bytes:
    """What the server sent before it closed ``sock``; fails if it is still open after ``seconds``."""
    sock.settimeout(seconds)
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except TimeoutError:
        pytest.fail(f"the connection was still open after {seconds} s (got {received!r})")
    return received


@pytest.mark.slow
@pytest.mark.serial  # the server's timeouts, read against the clock
def test_idle_slow_header_and_slow_body_connections_are_closed(fake_model_dir: Path) -> None:
    args = ["-m", str(fake_model_dir), "--backend", "fake", "--header-timeout", "1", "--body-timeout", "1"]
    args += ["--keep-alive-timeout", "1", "--max-connections", "4"]
    with running_server(args) as server:
        address = ("127.0.0.1", server.port)
        with socket.create_connection(address) as idle:
            assert _closed_within(idle, 5) == b""
        with socket.create_connection(address) as slow_headers:
            for part in (b"GET /health HTTP/1.1\r\n", b"Host: x\r\n"):
                slow_headers.sendall(part)
                time.sleep(0.4)
            assert _closed_within(slow_headers, 5) == b""
        body = json.dumps({"query": QUERY, "texts": DOCS}).encode()
        with socket.create_connection(address) as slow_body:
            head = f"POST /rerank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
            slow_body.sendall(head.encode() + b"\r\n\r\n" + body[:10])
            answer = _closed_within(slow_body, 5)
            assert answer.startswith(b"HTTP/1.1 408"), answer
            assert b"--body-timeout" in answer
        with socket.create_connection(address) as kept_alive:
            kept_alive.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _closed_within(kept_alive, 5).startswith(b"HTTP/1.1 200")  # then closed after 1 s idle
        # A request sent promptly is not cut by the header deadline, whatever the connection did before.
        with socket.create_connection(address) as prompt:
            time.sleep(0.5)
            prompt.sendall(b"POST /rerank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
            prompt.sendall(f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
            assert _closed_within(prompt, 10).startswith(b"HTTP/1.1 200")
        # Over --max-connections: 503 from uvicorn, not a connection the server cannot serve.
        held = [socket.create_connection(address) for _ in range(4)]
        try:
            with socket.create_connection(address) as extra:
                extra.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert _closed_within(extra, 5).startswith(b"HTTP/1.1 503")
        finally:
            for sock in held:
                sock.close()
