"""Big request bodies: refused at the documents limit at once, off the event loop, without growing the server.

Before, a 20 MB body of 1.4 million ``{"text": ""}`` documents was parsed and validated whole on the event loop:
its 413 came after 8 s, ``/health`` waited as long, and the process grew by 1.1 GB (RELIABILITY.md, "Big request
bodies"). The in-process tests need no model (the 413 comes before the model is asked for); the real-process test
measures the server's RSS.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from crossrank import Reranker
from crossrank.server import ServerOptions, create_app
from crossrank.server.body import decode_limited, parse_body
from crossrank.server.errors import TooManyItemsError
from crossrank.server.schemas import RerankV1Request
from server_process import running_server

JSON = {"content-type": "application/json"}
MAX_BODY_BYTES = 20_000_000  # the default --max-body-bytes
TIME_TO_413_S = 2.0  # measured 0.1-0.2 s in process, 0.1 s over HTTP; before: 8-14 s
# Each /health while the big body is handled; before: as long as the whole request (8-17 s). Measured 1-30 ms; one
# CI run read 0.59 s in process with the whole suite's threads and heap around it, so the bound leaves room for that.
HEALTH_S = 1.0
RSS_GROWTH_MB = 200  # peak RSS over the RSS before; measured 40-60 MB (2 copies of the body); before: 1,100


def big_body(document: bytes = b'{"text": ""}', max_bytes: int = MAX_BODY_BYTES) -> bytes:
    """``{"query": "q", "documents": [document, ...]}`` with as many documents as fit in ``max_bytes``."""
    head, item, tail = b'{"query": "q", "documents": [', document + b", ", document + b"]}"
    count = (max_bytes - len(head) - len(tail)) // len(item) + 1
    return head + item * (count - 1) + tail


def _never_loaded() -> Reranker:
    raise AssertionError("these tests do not start the app's lifespan")


@asynccontextmanager
async def _client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test", timeout=60) as c:
        yield c


async def _while_polling_health(client: httpx.AsyncClient, request: Any) -> tuple[httpx.Response, float, list[float]]:
    """``await request``, polling /health every 5 ms meanwhile: its answer, its seconds, each poll's seconds."""
    done = asyncio.Event()
    latencies: list[float] = []

    async def poll() -> None:
        while not done.is_set():
            started = time.perf_counter()
            assert (await client.get("/health")).status_code == 200
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.005)

    poller = asyncio.create_task(poll())
    while not latencies:  # the poller is running before the request starts
        await asyncio.sleep(0.001)
    started = time.perf_counter()
    answer = await request
    seconds = time.perf_counter() - started
    done.set()
    await poller
    return answer, seconds, latencies


@pytest.mark.serial  # time bounds (TIME_TO_413_S, HEALTH_S)
def test_a_20_mb_body_of_small_documents_is_413_at_once_while_health_answers() -> None:
    body = big_body()
    assert len(body) > 19_900_000 and body.count(b"}, ") > 1_400_000

    async def run() -> tuple[httpx.Response, float, list[float]]:
        async with _client(create_app(ServerOptions(model_name="m"), load=_never_loaded)) as client:
            return await _while_polling_health(client, client.post("/v1/rerank", content=body, headers=JSON))

    answer, seconds, latencies = asyncio.run(run())
    assert answer.status_code == 413, answer.text
    assert answer.json()["message"].startswith("documents: more than the limit of 1000 documents"), answer.text
    assert "--max-documents" in answer.json()["message"]
    assert seconds < TIME_TO_413_S, seconds
    # A /health sent while the request ran answered in time, or the request was over before one could be sent (in
    # process it often takes under 10 ms, less than one poll): either way nothing waited longer than HEALTH_S.
    assert max(latencies) < HEALTH_S and (len(latencies) >= 2 or seconds < HEALTH_S), (seconds, latencies)


@pytest.mark.parametrize(
    ("path", "body", "field", "shape"),
    [
        ("/v2/rerank", {"query": "q", "documents": ["d"] * 4}, "documents", "cohere"),
        ("/v1/rerank", {"query": "q", "documents": [{"text": "d"}] * 4}, "documents", "cohere"),
        ("/v1/rerank", {"query": "q", "documents": ["d"], "rank_fields": ["t"] * 4}, "rank_fields", "cohere"),
        ("/rerank", {"query": "q", "texts": ["d"] * 4}, "texts", "tei"),
        ("/rerank", {"query": "q", "documents": ["d"] * 4}, "documents", "tei"),
    ],
)
def test_every_list_past_max_documents_is_413_naming_the_field_and_the_limit_in_its_dialect(
    path: str, body: dict[str, Any], field: str, shape: str
) -> None:
    async def run() -> tuple[httpx.Response, httpx.Response]:
        async with _client(create_app(ServerOptions(model_name="m", max_documents=3), load=_never_loaded)) as client:
            refused = await client.post(path, json=body)
            at_the_limit = {name: value[:3] if isinstance(value, list) else value for name, value in body.items()}
            return refused, await client.post(path, json=at_the_limit)

    refused, at_the_limit = asyncio.run(run())
    assert refused.status_code == 413, refused.text
    answer = refused.json()
    if shape == "cohere":
        assert set(answer) == {"message"}
        message = answer["message"]
    else:
        assert set(answer) == {"error", "error_type"} and answer["error_type"] == "payload_limit"
        message = answer["error"]
    assert message.startswith(f"{field}: more than the limit of 3 "), message
    assert at_the_limit.status_code == 503, at_the_limit.text  # past the limit check: the model is not loaded here


def test_the_openapi_document_gives_every_rerank_list_max_items_of_this_server_and_keeps_the_bodies() -> None:
    for limit in (7, 1000):
        spec = create_app(ServerOptions(model_name="m", max_documents=limit), load=_never_loaded).openapi()
        schemas = spec["components"]["schemas"]

        def array(model: str, field: str) -> dict[str, Any]:
            schema = schemas[model]["properties"][field]  # noqa: B023 - used at once
            return next(option for option in [schema, *schema.get("anyOf", [])] if option.get("type") == "array")

        lists = [("CohereV2Request", "documents"), ("RerankV1Request", "documents"), ("RerankV1Request", "rank_fields")]
        lists += [("TeiRerankRequest", "texts"), ("TeiRerankRequest", "documents")]
        assert [array(model, field)["maxItems"] for model, field in lists] == [limit] * 5
        bodies = {"/v2/rerank": "CohereV2Request", "/v1/rerank": "RerankV1Request", "/rerank": "TeiRerankRequest"}
        for path, model in bodies.items():
            request_body = spec["paths"][path]["post"]["requestBody"]
            assert request_body == {
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model}"}}},
                "required": True,
            }
        assert "DocumentObject" in schemas  # what the request models refer to
        assert schemas["CohereV2Request"]["properties"]["min_score"]["anyOf"][0]["maximum"] == 1.0  # FastAPI's typing


@pytest.mark.parametrize("padding", [0, 100_000], ids=["on the loop", "in a thread"])
def test_bodies_that_do_not_parse_or_validate_get_the_answers_they_got_before(padding: int) -> None:
    space = b" " * padding  # past 64 KiB a body is parsed in a worker thread: the same answers
    cases: list[tuple[str, bytes, dict[str, str], int, str]] = [
        ("/v2/rerank", b'{"query": "q", "documents": ["a"' + space, JSON, 400, "not valid JSON: Expecting ','"),
        ("/rerank", b'{"query": "q",' + space + b"}", JSON, 400, "not valid JSON: Expecting property name enclosed"),
        ("/rerank", b'{"query": "q", "texts": ["a"]}' + space + b"x", JSON, 400, "not valid JSON: Extra data"),
        ("/v1/rerank", b'{"query": 5, "documents": ["a"]}' + space, JSON, 422, "query: Input should be a valid string"),
        ("/v2/rerank", b'{"documents": ["a"]}' + space, JSON, 422, "query: Field required"),
        ("/v2/rerank", b"", JSON, 422, "body: Field required"),
        ("/v2/rerank", b'{"query": "q", "documents": ["a"]}' + space, {}, 422, "body: Input should be a valid dict"),
        ("/v2/rerank", b'{"query": "\xff", "documents": []}' + space, JSON, 400, "There was an error parsing the body"),
        ("/v1/rerank", b'{"query": "q", "top_n": ' + b"9" * 5000 + b"}" + space, JSON, 400, "error parsing the body"),
        ("/rerank", b'{"query": "q"}' + space, JSON, 422, "exactly one of `texts` (TEI) or `documents` (vLLM)"),
    ]

    async def run() -> list[httpx.Response]:
        async with _client(create_app(ServerOptions(model_name="m"), load=_never_loaded)) as client:
            return [await client.post(path, content=body, headers=headers) for path, body, headers, _, _ in cases]

    for (path, _, _, status, text), answer in zip(cases, asyncio.run(run()), strict=True):
        assert answer.status_code == status, (path, answer.text)
        message = answer.json()["message" if path.startswith("/v") else "error"]
        assert text in message, (path, message)


def test_a_valid_body_past_64_kib_is_scored(fake_model_dir: Path) -> None:
    documents = [f"document {i} about glaciers and the rivers they feed, " * 3 for i in range(1000)]

    async def run() -> httpx.Response:
        reranker = Reranker(str(fake_model_dir), backend="fake")
        app = create_app(ServerOptions(model_name="fake"), load=lambda: reranker)
        async with app.router.lifespan_context(app), _client(app) as client:
            while app.state.service.state.status == "loading":
                await asyncio.sleep(0.01)
            return await client.post("/rerank", json={"query": "glaciers", "texts": documents})

    answer = asyncio.run(run())
    assert len(json.dumps(documents)) > 100_000
    assert answer.status_code == 200, answer.text
    assert sorted(rank["index"] for rank in answer.json()) == list(range(1000))


def test_refusing_a_20_mb_body_allocates_about_two_copies_of_it_not_a_million_objects() -> None:
    body = big_body(b"{}")  # 5 million documents
    tracemalloc.start()
    try:
        with pytest.raises(TooManyItemsError, match="documents: more than the limit of 1000 documents"):
            parse_body(body, "application/json", RerankV1Request, 1000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2.5 * len(body), peak  # the body decoded to text (1x for ASCII), and 1,001 documents


def test_decoding_matches_json_loads_on_valid_and_broken_json() -> None:
    valid = [
        '{"query": "q", "documents": ["a", {"text": "b", "x": [1, {"y": null}]}], "top_n": 2, "min_score": 0.5}',
        ' \n{ "query" : "\\ud800" , "texts" : [ "a" , "b" ] , "rank_fields" : [ ] , "n" : -1.5e3 }\t ',
        '{"documents": [], "texts": [[], {}], "rank_fields": [NaN, Infinity, "\\u00e9"], "documents": "x"}',
        '{}', '[{"documents": [1, 2, 3, 4]}]', '"x"', "5", "null",
    ]  # fmt: skip
    random_ = random.Random(20)
    texts = list(valid)
    for text in valid[:3]:
        texts += [text[:cut] for cut in range(len(text))]
        for _ in range(300):
            at = random_.randrange(len(text))
            texts.append(text[:at] + random_.choice('{}[],:"\\ 0eE-.ntx') + text[at + random_.randrange(2) :])
    for text in texts:
        try:
            expected: Any = ("ok", json.loads(text))
        except json.JSONDecodeError as exc:
            expected = ("error", exc.msg, exc.pos)
        try:
            got: Any = ("ok", decode_limited(text, 1000))
        except json.JSONDecodeError as exc:
            got = ("error", exc.msg, exc.pos)
        assert repr(got) == repr(expected), text  # repr: NaN != NaN
    with pytest.raises(TooManyItemsError, match="texts: more than the limit of 2 documents"):
        decode_limited('{"texts": ["a", "b", "c"', 2)  # refused before the rest is read, broken or not


@pytest.mark.slow
@pytest.mark.serial  # time bounds and the server's peak RSS
def test_a_real_server_refuses_a_20_mb_body_at_once_answers_health_and_stays_small(english_model_dir: Path) -> None:
    body = big_body()
    with running_server(["-m", str(english_model_dir), "--device", "cpu"]) as server:
        status = Path(f"/proc/{server.process.pid}/status")

        def kib(field: str) -> int:
            line = next(line for line in status.read_text().splitlines() if line.startswith(field + ":"))
            return int(line.split()[1])

        async def run() -> tuple[httpx.Response, float, list[float]]:
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
                for _ in range(2):  # the first request after start-up allocates the server's lasting buffers
                    await client.post("/v2/rerank", json={"query": "q", "documents": ["d"] * 10})
                rss_before.append(kib("VmRSS"))
                Path(f"/proc/{server.process.pid}/clear_refs").write_text("5")  # VmHWM := the RSS now
                return await _while_polling_health(client, client.post("/v1/rerank", content=body, headers=JSON))

        rss_before: list[int] = []
        answer, seconds, latencies = asyncio.run(run())
        growth_mb = (kib("VmHWM") - rss_before[0]) / 1024
    assert answer.status_code == 413 and "documents: more than the limit of 1000" in answer.json()["message"]
    assert seconds < TIME_TO_413_S, seconds
    assert latencies and max(latencies) < HEALTH_S, latencies
    assert growth_mb < RSS_GROWTH_MB, growth_mb
