"""Each dialect's request and response shapes, twice: against the real server process on the shared English
model (slow), and in this process on the fake backend (``[fake_backend]``: the app through ``TestClient``,
token-overlap scores), where the shapes, limits and errors are the same."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from crossrank import Reranker
from crossrank.engine.batcher import QueueOptions
from crossrank.server import ServerOptions, create_app

QUERY = "what is panda?"
DOCS = ["hi", "The giant panda is a bear native to China.", "Pandas is a Python library.", "hi"]


@dataclass(frozen=True)
class Served:
    """A running app, the model folder it serves, and the library's relevance scores for DOCS by index."""

    client: httpx.Client
    model_dir: Path
    expected: dict[int, float]


def _expected(reranker: Reranker) -> dict[int, float]:
    return {r.index: r.relevance_score for r in reranker.rerank(QUERY, DOCS).results}


@pytest.fixture(scope="module", params=["fake_backend", pytest.param("real_server", marks=pytest.mark.slow)])
def server(request: pytest.FixtureRequest) -> Iterator[Served]:
    if request.param == "real_server":
        process = request.getfixturevalue("open_server")
        model_dir: Path = request.getfixturevalue("english_model_dir")
        with httpx.Client(base_url=process.url, timeout=30) as client:
            yield Served(client, model_dir, _expected(request.getfixturevalue("english_reranker")))
        return
    model_dir = request.getfixturevalue("fake_model_dir")
    # What tests/conftest.py's open_server passes as flags: model name, 20 ms wait, every request counted as slow.
    options = ServerOptions(model_name="minilm", queue=QueueOptions(max_wait_ms=20), slow_ms=0)
    app = create_app(options, load=lambda: Reranker(str(model_dir), backend="fake"))
    with TestClient(app) as client:  # runs the lifespan: loads the reranker and warms it up
        for _ in range(500):
            if client.get("/ready").status_code == 200:
                break
            time.sleep(0.02)
        yield Served(client, model_dir, _expected(request.getfixturevalue("fake_reranker")))


@pytest.fixture
def expected(server: Served) -> dict[int, float]:
    return server.expected


def post(server: Served, path: str, body: object) -> httpx.Response:
    return server.client.post(path, json=body)


def test_cohere_v2_shape_and_scores(server: Served, expected: dict[int, float]) -> None:
    r = post(server, "/v2/rerank", {"model": "rerank-v3.5", "query": QUERY, "documents": DOCS, "priority": 0})
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"id", "results", "meta"}
    assert body["meta"] == {
        "api_version": {"version": "2", "is_deprecated": False, "is_experimental": False},
        "billed_units": {"search_units": 1},
    }
    results = body["results"]
    assert [set(x) for x in results] == [{"index", "relevance_score"}] * 4
    assert sorted(x["index"] for x in results) == [0, 1, 2, 3]
    for item in results:
        assert item["relevance_score"] == pytest.approx(expected[item["index"]], abs=1e-5)
    scores = [x["relevance_score"] for x in results]
    assert scores == sorted(scores, reverse=True)
    # The duplicated "hi" ties: the earlier index comes first.
    his = [x["index"] for x in results if x["index"] in (0, 3)]
    assert his == [0, 3]
    assert results[0]["index"] == 1
    for header in ("x-queue-time", "x-inference-time", "x-total-time", "x-compute-tokens"):
        assert int(r.headers[header]) >= 0


def test_cohere_v2_top_n_and_min_score(server: Served, expected: dict[int, float]) -> None:
    top = post(server, "/v2/rerank", {"model": "m", "query": QUERY, "documents": DOCS, "top_n": 2}).json()["results"]
    assert [x["index"] for x in top] == [1, sorted(expected, key=lambda i: (-expected[i], i))[1]]
    threshold = (expected[1] + expected[2]) / 2
    kept = post(server, "/v2/rerank", {"query": QUERY, "documents": DOCS, "min_score": threshold}).json()["results"]
    assert [x["index"] for x in kept] == [1]
    everything = post(server, "/v2/rerank", {"query": QUERY, "documents": DOCS, "top_n": 0}).json()["results"]
    assert len(everything) == 4  # vLLM's convention: 0 means all


def test_cohere_v1_documents_as_objects_and_rank_fields(server: Served) -> None:
    docs = [{"text": "hi", "id": "a"}, "The giant panda is a bear native to China.", {"title": "Pandas", "body": "x"}]
    r = post(server, "/v1/rerank", {"query": QUERY, "documents": docs[:2], "return_documents": True})
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"id", "model", "usage", "results", "meta"}
    assert body["model"] == "minilm"
    assert body["usage"]["total_tokens"] > 0
    assert body["meta"]["api_version"]["version"] == "1"
    by_index = {x["index"]: x for x in body["results"]}
    assert by_index[0]["document"] == {"text": "hi", "id": "a"}  # extra fields echoed as Cohere v1 does
    assert by_index[1]["document"] == {"text": docs[1]}
    ranked = post(
        server, "/v1/rerank", {"query": "pandas library", "documents": docs, "rank_fields": ["title", "text"]}
    )
    assert ranked.status_code == 200
    assert len(ranked.json()["results"]) == 3


def test_v1_return_documents_false_omits_the_key(server: Served) -> None:
    body = post(server, "/v1/rerank", {"query": QUERY, "documents": DOCS, "return_documents": False}).json()
    assert all(set(x) == {"index", "relevance_score"} for x in body["results"])


def test_jina_shape(server: Served, expected: dict[int, float]) -> None:
    body = post(
        server,
        "/v1/rerank",
        {"model": "jina-reranker-v2-base-multilingual", "query": QUERY, "documents": DOCS, "top_n": 3},
    ).json()
    assert len(body["results"]) == 3
    first = body["results"][0]
    assert first["index"] == 1
    assert first["document"] == {"text": DOCS[1]}  # Jina clients read document.text without asking
    assert first["relevance_score"] == pytest.approx(expected[1], abs=1e-5)
    assert isinstance(body["usage"]["total_tokens"], int)


def test_tei_shape(server: Served, expected: dict[int, float]) -> None:
    r = post(server, "/rerank", {"query": QUERY, "texts": DOCS})
    assert r.status_code == 200
    body = r.json()
    assert isinstance(body, list)
    assert all(set(x) == {"index", "score"} for x in body)  # no "text": null when not asked
    assert body[0]["index"] == 1
    for item in body:
        assert item["score"] == pytest.approx(expected[item["index"]], abs=1e-5)
    raw = post(server, "/rerank", {"query": QUERY, "texts": DOCS, "raw_scores": True, "return_text": True}).json()
    for item in raw:
        p = expected[item["index"]]
        assert item["score"] == pytest.approx(math.log(p / (1 - p)), abs=1e-3)
        assert item["text"] == DOCS[item["index"]]


def test_vllm_body_on_rerank(server: Served) -> None:
    body = post(server, "/rerank", {"model": "BAAI/bge-reranker-v2-m3", "query": QUERY, "documents": DOCS, "top_n": 0})
    assert body.status_code == 200
    payload = body.json()
    assert set(payload) >= {"id", "model", "usage", "results"}
    assert len(payload["results"]) == 4
    assert payload["results"][0]["document"]["text"] == DOCS[1]


def test_empty_documents(server: Served) -> None:
    assert post(server, "/v2/rerank", {"query": QUERY, "documents": []}).json()["results"] == []
    tei = post(server, "/rerank", {"query": QUERY, "texts": []})
    assert tei.status_code == 400
    assert tei.json() == {"error": "`texts` cannot be empty", "error_type": "empty"}


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v2/rerank", {"query": 5, "documents": ["a"]}, "query"),
        ("/v2/rerank", {"query": "q", "documents": "a"}, "documents"),
        ("/v2/rerank", {"query": "q", "documents": ["a", 3]}, "documents.1"),
        ("/v2/rerank", {"query": "q", "documents": ["a"], "top_n": -1}, "top_n"),
        ("/v2/rerank", {"query": "q", "documents": ["a"], "top_n": "many"}, "top_n"),
        ("/v2/rerank", {"query": "q", "documents": ["a"], "top_n": "2"}, "top_n"),
        ("/v2/rerank", {"query": "q", "documents": ["a"], "top_n": 1.5}, "top_n"),
        ("/v1/rerank", {"query": "q", "documents": ["a"], "return_documents": "true"}, "return_documents"),
        ("/v2/rerank", {"query": "q", "documents": ["a"], "min_score": 2}, "min_score"),
        ("/v2/rerank", {"documents": ["a"]}, "query"),
        ("/v1/rerank", {"query": "q", "documents": [{"image": "http://x/y.png"}]}, "documents[0]"),
        ("/v1/rerank", {"query": "q", "documents": [{"title": "t"}]}, "documents[0].text"),
        ("/rerank", {"query": "q", "texts": ["a"], "documents": ["b"]}, "exactly one"),
        ("/rerank", {"query": "q", "texts": [None]}, "texts.0"),
        ("/rerank", {"query": "q", "texts": ["a"], "truncation_direction": "middle"}, "truncation_direction"),
    ],
)
def test_wrong_types_are_422_naming_the_field(server: Served, path: str, body: object, field: str) -> None:
    r = post(server, path, body)
    assert r.status_code == 422, r.text
    message = r.json()["message" if path.startswith("/v") else "error"]
    assert field in message


def test_integral_floats_are_integers_as_in_json_schema(server: Served) -> None:
    # Python's json.dumps writes a float count as 2.0; JSON Schema's "integer" takes it.
    documents = ["hi", "The giant panda is a bear.", "Pandas is a Python library."]
    v2 = post(server, "/v2/rerank", {"query": QUERY, "documents": documents, "top_n": 2.0, "max_tokens_per_doc": 512.0})
    assert v2.status_code == 200, v2.text
    assert len(v2.json()["results"]) == 2
    tei = post(server, "/rerank", {"query": QUERY, "texts": documents, "top_n": 1.0})
    assert tei.status_code == 200, tei.text


@pytest.mark.parametrize("path", ["/v2/rerank", "/v1/rerank", "/rerank"])
def test_malformed_json_is_400_in_the_dialects_shape(server: Served, path: str) -> None:
    for payload in (b'{"query": "q", "documents": [', b"\xff\xfe", b"[1, 2]", b"null"):
        r = server.client.post(path, content=payload, headers={"content-type": "application/json"})
        assert 400 <= r.status_code < 500, (payload, r.status_code, r.text)
        body = r.json()
        assert ("message" in body) if path.startswith("/v") else ("error" in body and "error_type" in body)
    assert server.client.get("/health").status_code == 200


def test_unknown_route_and_method(server: Served) -> None:
    assert server.client.get("/v2/rerank").status_code == 405
    missing = server.client.post("/nope", json={})
    assert missing.status_code == 404
    assert "error" in missing.json()


def test_ops_routes(server: Served) -> None:
    assert server.client.get("/health").json() == {"status": "ok"}
    assert server.client.get("/ready").json() == {"status": "ready"}
    info = server.client.get("/info").json()
    assert info["model_id"] == "minilm"
    assert info["device"] == "cpu"
    assert info["dtype"] == "float32"
    assert info["max_length"] == 512
    assert (info["max_batch_tokens"], info["max_batch_size"], info["min_pass_tokens"]) == (8192, 64, 0)  # CPU
    assert info["limits"]["max_documents"] == 1000
    assert "model_path" not in info  # no local paths in answers (issue 21)
    spec = server.client.get("/openapi.json").json()
    assert {"/v2/rerank", "/v1/rerank", "/rerank", "/health", "/ready", "/info", "/metrics"} <= set(spec["paths"])
    assert server.client.get("/docs").status_code == 200


def test_long_document_options_on_every_route(server: Served) -> None:
    long_document = "The stock market closed lower on Tuesday. " * 150 + "The giant panda is a bear native to China."
    # truncate=false refuses to drop tokens: windows read everything, `first` would drop the rest.
    whole = post(server, "/rerank", {"query": QUERY, "texts": [long_document], "truncate": False})
    assert whole.status_code == 200
    refused = post(
        server, "/rerank", {"query": QUERY, "texts": [long_document], "truncate": False, "aggregate": "first"}
    )
    assert refused.status_code == 413
    assert "tokens" in refused.json()["error"] and "documents[0]" in refused.json()["error"]
    best = post(server, "/v2/rerank", {"query": QUERY, "documents": [long_document, "hi"], "aggregate": "max"}).json()
    first = post(
        server, "/v2/rerank", {"query": QUERY, "documents": [long_document, "hi"], "aggregate": "first"}
    ).json()
    score = {x["index"]: x["relevance_score"] for x in best["results"]}
    assert score[0] > {x["index"]: x["relevance_score"] for x in first["results"]}[0]
    capped = post(server, "/v2/rerank", {"query": QUERY, "documents": [long_document], "max_tokens_per_doc": 16})
    assert capped.status_code == 200
    assert post(server, "/v1/rerank", {"query": QUERY, "documents": ["d"], "aggregate": "median"}).status_code == 422


def test_chunked_documents_carry_their_evidence_span_on_every_route(server: Served) -> None:
    evidence = "The giant panda is a bear native to China."
    long_document = "The stock market closed lower on Tuesday. " * 150 + evidence
    documents = [long_document, "hi"]
    answers = {
        "/v2/rerank": post(server, "/v2/rerank", {"query": QUERY, "documents": documents}).json()["results"],
        "/v1/rerank": post(server, "/v1/rerank", {"query": QUERY, "documents": documents}).json()["results"],
        "/rerank": post(server, "/rerank", {"query": QUERY, "texts": documents}).json(),
    }
    for route, results in answers.items():
        by_index = {r["index"]: r for r in results}
        chunked, short = by_index[0], by_index[1]
        assert chunked["chunks"] > 1, route
        span = chunked["span"]
        assert evidence in long_document[span["start"] : span["end"]], route
        assert span["end"] - span["start"] < len(long_document)
        assert "span" not in short and "chunks" not in short, route  # one-window documents: the upstream shape
