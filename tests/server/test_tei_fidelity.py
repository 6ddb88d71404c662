"""Issue 22, items 1 and 2: TEI's ``/info``, ``/tokenize`` and ``/decode``, Infinity's API at ``/infinity``, and the
OpenAI-style model list, in this process: the shared English model's folder on the fake backend (the real
tokenizer, token-overlap scores; the shapes and errors do not depend on the weights).

Upstream shapes: TEI's router/src/lib.rs (``Info``) and router/src/http/types.rs (``TokenizeRequest``,
``SimpleToken``, ``DecodeRequest``); Infinity's infinity_emb/fastapi_schemas/pymodels.py (``RerankInput``,
``ReRankResult``, ``ModelInfo``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tokenizers import Tokenizer

from crossrank import Reranker
from crossrank.engine.batcher import QueueOptions
from crossrank.server import ServerOptions, create_app

QUERY = "what is panda?"
DOCS = ["hi", "The giant panda is a bear native to China.", "Pandas is a Python library."]
KEY = "test-key"


def _ready(client: TestClient) -> None:
    deadline = time.monotonic() + 60
    while client.get("/ready").status_code != 200:
        assert time.monotonic() < deadline, client.get("/info").json()
        time.sleep(0.02)


@pytest.fixture(scope="module")
def reranker(english_model_dir: Path) -> Iterator[Reranker]:
    with Reranker(str(english_model_dir), backend="fake") as loaded:
        yield loaded


@pytest.fixture(scope="module")
def client(reranker: Reranker) -> Iterator[TestClient]:
    options = ServerOptions(
        model_name="minilm", queue=QueueOptions(max_wait_ms=5), max_documents=4, max_document_chars=300
    )
    with TestClient(create_app(options, load=lambda: reranker)) as served:
        _ready(served)
        yield served


@pytest.fixture(scope="module")
def hf_tokenizer(english_model_dir: Path) -> Tokenizer:
    """The model's own tokenizer.json as TEI reads it (crossrank's copy is left out of the reference)."""
    tokenizer = Tokenizer.from_file(str(english_model_dir / "tokenizer.json"))
    tokenizer.no_padding()  # the file pads to 128 tokens; TEI's /tokenize does not pad
    tokenizer.no_truncation()
    return tokenizer


def _error(response: object, status: int, *words: str) -> None:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) >= {"error", "error_type"}, body
    for word in words:
        assert word in body["error"], body


# /info


def test_info_has_tei_fields_with_tei_meaning(client: TestClient, english_model_dir: Path) -> None:
    info = client.get("/info").json()
    config = json.loads((english_model_dir / "config.json").read_text())
    labels = {str(k): v for k, v in config["id2label"].items()}
    assert info["model_type"] == {
        "reranker": {"id2label": labels, "label2id": {label: int(i) for i, label in labels.items()}}
    }
    assert info["model_id"] == info["served_model_name"] == "minilm"
    assert info["model_sha"] is None  # a folder that is neither a download nor a hub-cache snapshot
    assert info["model_dtype"] == "float32"
    assert info["max_input_length"] == info["max_length"] == 512  # the pair length scored in one pass
    assert info["max_client_batch_size"] == info["limits"]["max_documents"] == 4
    assert info["max_concurrent_requests"] == info["limits"]["max_queue_pairs"]
    assert info["max_batch_tokens"] > 0
    assert info["max_batch_requests"] is None
    assert info["auto_truncate"] is True
    assert info["tokenization_workers"] == 1
    assert info["version"] and info["sha"] is None and info["docker_label"] is None
    # crossrank's own fields stay.
    assert info["status"] == "ready" and info["backend"] == "fake" and "fingerprint" in info


def test_dify_reads_a_reranker_from_info(client: TestClient) -> None:
    # What Dify's TeiHelper._get_tei_extra_parameter does with /info (see tests/integrations/test_dify_tei.py).
    info = client.get("/info").json()
    assert next(iter(info.get("model_type", {}))) == "reranker"
    assert "max_input_length" in info and info["max_input_length"] == info["max_length"]


# /tokenize


def test_tokenize_matches_the_models_tokenizer_with_tei_byte_offsets(
    client: TestClient, hf_tokenizer: Tokenizer
) -> None:
    text = "héllo wörld, 中文 panda"
    r = client.post("/tokenize", json={"inputs": text})
    assert r.status_code == 200, r.text
    [tokens] = r.json()
    expected = hf_tokenizer.encode(text)
    assert [t["id"] for t in tokens] == expected.ids
    assert [t["special"] for t in tokens] == [bool(m) for m in expected.special_tokens_mask]
    assert tokens[0]["special"] and tokens[-1]["special"] and not tokens[1]["special"]
    data = text.encode()
    for token, (start, stop) in zip(tokens, expected.offsets, strict=True):
        assert set(token) == {"id", "text", "special", "start", "stop"}
        if token["special"]:
            assert token["start"] is None and token["stop"] is None
            assert token["text"] == hf_tokenizer.id_to_token(token["id"])
        else:
            # TEI counts UTF-8 bytes; the Python tokenizer counts characters.
            assert (token["start"], token["stop"]) == (len(text[:start].encode()), len(text[:stop].encode()))
            assert data[token["start"] : token["stop"]].decode() == token["text"] == text[start:stop]


def test_tokenize_a_list_without_special_tokens(client: TestClient, hf_tokenizer: Tokenizer) -> None:
    r = client.post("/tokenize", json={"inputs": ["panda", "a bear"], "add_special_tokens": False})
    assert r.status_code == 200, r.text
    ids = [[t["id"] for t in tokens] for tokens in r.json()]
    assert ids == [hf_tokenizer.encode(t, add_special_tokens=False).ids for t in ("panda", "a bear")]
    assert not any(t["special"] for tokens in r.json() for t in tokens)


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"inputs": []}, 400, ["`inputs` cannot be empty"]),
        ({"inputs": ["a"] * 5}, 413, ["inputs", "4 texts", "--max-documents"]),
        ({"inputs": ["a", "b" * 301]}, 413, ["inputs[1]", "301 characters", "300"]),
        ({"inputs": "b" * 301}, 413, ["inputs: 301 characters", "300"]),
        ({"inputs": "a", "prompt_name": "query"}, 422, ["prompt_name"]),
        ({"inputs": 5}, 422, ["inputs"]),
        ({"inputs": "a", "add_special_tokens": "yes"}, 422, ["add_special_tokens"]),
        ({}, 422, ["inputs"]),
    ],
)
def test_tokenize_errors_name_the_field(client: TestClient, body: object, status: int, words: list[str]) -> None:
    _error(client.post("/tokenize", json=body), status, *words)


# /decode


def test_decode_round_trips_tokenize(client: TestClient, hf_tokenizer: Tokenizer) -> None:
    ids = [t["id"] for t in client.post("/tokenize", json={"inputs": "The giant panda"}).json()[0]]
    single = client.post("/decode", json={"ids": ids})
    assert single.status_code == 200, single.text
    assert single.json() == ["the giant panda"]  # an uncased model
    kept = client.post("/decode", json={"ids": [ids, ids[:2]], "skip_special_tokens": False}).json()
    assert kept == [
        hf_tokenizer.decode(ids, skip_special_tokens=False),
        hf_tokenizer.decode(ids[:2], skip_special_tokens=False),
    ]
    assert kept[0].startswith("[CLS]")
    assert client.post("/decode", json={"ids": []}).json() == [""]  # TEI reads [] as one empty sequence


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"ids": [[1]] * 5}, 413, ["ids", "5 sequences", "limit of 4"]),
        ({"ids": [5] * 301}, 413, ["ids: 301 token ids", "300"]),
        ({"ids": [[5], [5, 10**9]]}, 422, ["ids[1][1]", "not a token id"]),
        ({"ids": [5, -1]}, 422, ["ids"]),
        ({"ids": "5"}, 422, ["ids"]),
        ({"ids": [1], "skip_special_tokens": 1}, 422, ["skip_special_tokens"]),
    ],
)
def test_decode_errors_name_the_field(client: TestClient, body: object, status: int, words: list[str]) -> None:
    _error(client.post("/decode", json=body), status, *words)


# Infinity at /infinity


def test_infinity_rerank_is_infinitys_shape_with_the_same_scores(client: TestClient, reranker: Reranker) -> None:
    expected = {r.index: r.relevance_score for r in reranker.rerank(QUERY, DOCS).results}
    r = client.post("/infinity/rerank", json={"model": "minilm", "query": QUERY, "documents": DOCS})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"object", "results", "model", "usage", "id", "created"}
    assert body["object"] == "rerank" and body["model"] == "minilm" and body["id"].startswith("infinity-")
    assert abs(body["created"] - time.time()) < 60
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 0
    results = body["results"]
    assert [set(x) for x in results] == [{"relevance_score", "index", "document"}] * 3
    assert all(x["document"] is None for x in results)  # Infinity's default: return_documents false
    scores = [x["relevance_score"] for x in results]
    assert scores == sorted(scores, reverse=True)
    for x in results:
        assert x["relevance_score"] == pytest.approx(expected[x["index"]], abs=1e-6)
    vllm = client.post("/rerank", json={"query": QUERY, "documents": DOCS}).json()
    assert vllm["results"][0]["document"] == {"text": DOCS[vllm["results"][0]["index"]]}  # /rerank unchanged


def test_infinity_echoes_documents_as_strings_and_keeps_top_n_and_raw_scores(
    client: TestClient, reranker: Reranker
) -> None:
    r = client.post("/infinity/rerank", json={"query": QUERY, "documents": DOCS, "return_documents": True, "top_n": 2})
    results = r.json()["results"]
    assert len(results) == 2
    assert all(x["document"] == DOCS[x["index"]] for x in results)
    raw = client.post("/infinity/rerank", json={"query": QUERY, "documents": DOCS, "raw_scores": True}).json()
    logits = {r.index: r.score for r in reranker.rerank(QUERY, DOCS).results}
    for x in raw["results"]:
        assert x["relevance_score"] == pytest.approx(logits[x["index"]], abs=1e-5)


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"query": QUERY, "documents": []}, 422, ["documents"]),
        ({"query": QUERY, "documents": ["a"] * 5}, 413, ["documents", "4 documents"]),
        ({"query": QUERY, "documents": ["a", "b" * 301]}, 413, ["documents[1]", "301 characters"]),
        ({"query": QUERY, "documents": ["a"], "top_n": 0}, 422, ["top_n"]),
        ({"query": QUERY, "documents": [{"text": "a"}]}, 422, ["documents.0"]),
    ],
)
def test_infinity_errors_name_the_field(client: TestClient, body: object, status: int, words: list[str]) -> None:
    _error(client.post("/infinity/rerank", json=body), status, *words)


def test_infinity_health_answers_infinitys_shape(client: TestClient) -> None:
    r = client.get("/infinity/health")
    assert r.status_code == 200
    assert abs(r.json()["unix"] - time.time()) < 60


# OpenAI-style model list


@pytest.mark.parametrize("path", ["/v1/models", "/models", "/infinity/models"])
def test_models_lists_the_served_model(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list"
    [card] = body["data"]
    assert {"id": "minilm", "object": "model", "owned_by": "crossrank", "root": "minilm"}.items() <= card.items()
    assert card["max_model_len"] == 512 and card["capabilities"] == ["rerank"] and card["backend"] == "fake"
    assert 0 < time.time() - card["created"] < 3600


# Auth, routes, the OpenAPI document


def test_new_routes_need_the_key_but_infinity_health(reranker: Reranker) -> None:
    options = ServerOptions(model_name="minilm", api_keys=(KEY,))
    with TestClient(create_app(options, load=lambda: reranker)) as client:
        auth = {"Authorization": f"Bearer {KEY}"}
        deadline = time.monotonic() + 60
        while client.get("/ready", headers=auth).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        calls = [
            ("post", "/tokenize", {"inputs": "a"}),
            ("post", "/decode", {"ids": [5]}),
            ("post", "/infinity/rerank", {"query": "q", "documents": ["a"]}),
            ("get", "/infinity/models", None),
            ("get", "/v1/models", None),
            ("get", "/models", None),
        ]
        for method, path, body in calls:
            refused = client.request(method, path, json=body)
            assert refused.status_code == 401, path
            assert client.request(method, path, json=body, headers=auth).status_code == 200, path
        assert client.get("/infinity/health").status_code == 200
        paths = client.get("/openapi.json", headers=auth).json()["paths"]
        assert paths["/v1/models"]["get"]["security"] == [{"bearer": []}]
        assert "security" not in paths["/infinity/health"]["get"]


def test_openapi_documents_the_new_bodies_with_their_limits(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    for path in ("/tokenize", "/decode", "/infinity/rerank"):
        body = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body["$ref"].endswith(("TokenizeRequest", "DecodeRequest", "InfinityRerankRequest"))
        assert {"413", "422"} <= set(schema["paths"][path]["post"]["responses"])
    inputs = schema["components"]["schemas"]["TokenizeRequest"]["properties"]["inputs"]["anyOf"]
    assert {"type": "string"} in inputs and any(o.get("maxItems") == 4 for o in inputs)
    documents = schema["components"]["schemas"]["InfinityRerankRequest"]["properties"]["documents"]
    assert documents["maxItems"] == 4 and documents["minItems"] == 1
    for path in ("/v1/models", "/models", "/infinity/models", "/infinity/health"):
        assert "get" in schema["paths"][path]


def test_requests_on_new_routes_are_counted_under_their_route(client: TestClient) -> None:
    client.post("/tokenize", json={"inputs": "a"})
    client.get("/v1/models")
    metrics = client.get("/metrics").text
    for route in ("/tokenize", "/v1/models"):
        assert f'route="{route}"' in metrics, route


# What RAGFlow and Open WebUI send (they cannot run here): their requests, transcribed, on the routes they call.


def test_ragflow_huggingface_provider_request(client: TestClient, reranker: Reranker) -> None:
    # infiniflow/ragflow rag/llm/rerank_model.py, HuggingfaceRerank.post: TEI's body at {base_url}/rerank, no key.
    texts = DOCS
    res = client.post("/rerank", json={"query": QUERY, "texts": texts, "raw_scores": False, "truncate": True})
    res.raise_for_status()
    scores = [0.0] * len(texts)
    for o in res.json():
        scores[o["index"]] = o["score"]
    expected = reranker.compute_score([(QUERY, t) for t in texts], normalize=True)
    assert scores == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("path", ["/rerank", "/v1/rerank"])
def test_ragflow_openai_compatible_and_open_webui_external_requests(
    client: TestClient, reranker: Reranker, path: str
) -> None:
    # RAGFlow's OpenAI_APIRerank posts this to {base_url}/rerank; Open WebUI's ExternalReranker
    # (backend/open_webui/retrieval/models/external.py) to the URL it is given, e.g. .../v1/rerank.
    # Both read results[].index and results[].relevance_score.
    data = {"model": "minilm", "query": QUERY, "documents": DOCS, "top_n": len(DOCS)}
    res = client.post(path, json=data, headers={"Authorization": "Bearer any"})
    res.raise_for_status()
    by_index = sorted(res.json()["results"], key=lambda x: x["index"])
    expected = reranker.compute_score([(QUERY, t) for t in DOCS], normalize=True)
    assert [r["relevance_score"] for r in by_index] == pytest.approx(expected, abs=1e-6)
