"""A decoder reranker (the tiny Qwen3-Reranker of tests/decoders.py) through every rerank route: each dialect takes
an ``instruction`` and answers the library's scores for it; ``/info`` names the family; a cross-encoder ignores an
instruction. In process (the app through ``TestClient``), and once through ``crossrank serve`` and the Cohere SDK
(slow)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from crossrank import Reranker
from crossrank.config import MAX_INSTRUCTION_CHARS
from crossrank.engine.batcher import QueueOptions
from crossrank.families import FAMILIES
from crossrank.server import ServerOptions, create_app
from server_process import metric, running_server

QUERY = "what is a panda?"
DOCS = ["pandas eat bamboo", "Paris is the capital of France.", "the giant panda is a bear", "hi"]
INSTRUCTION = "Judge whether the passage names a capital city"
QWEN3_DEFAULT = FAMILIES["qwen3-reranker"].default_instruction


def _ready(client: TestClient) -> TestClient:
    deadline = time.monotonic() + 30
    while client.get("/ready").status_code != 200:
        assert time.monotonic() < deadline, client.get("/info").json()
        time.sleep(0.02)
    return client


@pytest.fixture(scope="module")
def served(tiny_qwen3_dir: Path) -> Iterator[TestClient]:
    """The app serving the tiny Qwen3 reranker (its own Reranker: the app closes it at shutdown)."""
    app = create_app(
        ServerOptions(model_name="qwen3-tiny"),
        load=lambda: Reranker(str(tiny_qwen3_dir), device="cpu", dtype="float32"),
    )
    with TestClient(app) as client:
        yield _ready(client)


def _expected(reranker: Reranker, instruction: str | None) -> dict[int, tuple[float, float]]:
    """Index -> (logit, relevance score) from ``Reranker.rerank``."""
    result = reranker.rerank(QUERY, DOCS, instruction=instruction)
    return {r.index: (r.score, r.relevance_score) for r in result.results}


def _extra(instruction: str | None) -> dict[str, Any]:
    return {} if instruction is None else {"instruction": instruction}


# Each route's path and body for QUERY, DOCS and an instruction (None: the field left out).
def _cohere_v2(instruction: str | None) -> tuple[str, dict[str, Any]]:
    return "/v2/rerank", {"model": "m", "query": QUERY, "documents": DOCS, **_extra(instruction)}


def _cohere_v1(instruction: str | None) -> tuple[str, dict[str, Any]]:
    documents = [{"text": d} for d in DOCS]
    return "/v1/rerank", {"model": "m", "query": QUERY, "documents": documents, **_extra(instruction)}


def _tei(instruction: str | None) -> tuple[str, dict[str, Any]]:
    return "/rerank", {"query": QUERY, "texts": DOCS, "raw_scores": True, **_extra(instruction)}


def _vllm(instruction: str | None) -> tuple[str, dict[str, Any]]:
    return "/rerank", {"model": "m", "query": QUERY, "documents": DOCS, **_extra(instruction)}


def _infinity(instruction: str | None) -> tuple[str, dict[str, Any]]:
    return "/infinity/rerank", {"query": QUERY, "documents": DOCS, "raw_scores": True, **_extra(instruction)}


ROUTES = {"cohere-v2": _cohere_v2, "cohere-v1": _cohere_v1, "tei": _tei, "vllm": _vllm, "infinity": _infinity}
RAW = {"tei", "infinity"}  # these bodies ask for raw logits


def _scores(route: str, answer: Any) -> dict[int, float]:
    results = answer if isinstance(answer, list) else answer["results"]
    key = "score" if route == "tei" else "relevance_score"
    return {item["index"]: item[key] for item in results}


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("instruction", [None, INSTRUCTION], ids=["default", "instruction"])
def test_every_route_gives_the_librarys_scores_for_the_instruction(
    served: TestClient, qwen3_reranker: Reranker, route: str, instruction: str | None
) -> None:
    path, body = ROUTES[route](instruction)
    response = served.post(path, json=body)
    assert response.status_code == 200, response.text
    got = _scores(route, response.json())
    expected = _expected(qwen3_reranker, instruction)
    assert sorted(got) == list(range(len(DOCS)))
    column = 0 if route in RAW else 1
    for index, score in got.items():
        assert score == pytest.approx(expected[index][column], abs=1e-6)


@pytest.mark.parametrize("route", ROUTES)
def test_the_instruction_reaches_the_model(served: TestClient, route: str) -> None:
    """A different instruction gives different scores (the field is not dropped on the way)."""
    answers = []
    for instruction in (None, INSTRUCTION):
        path, body = ROUTES[route](instruction)
        answers.append(_scores(route, served.post(path, json=body).json()))
    assert all(abs(answers[0][i] - answers[1][i]) > 1e-6 for i in range(len(DOCS)))


@pytest.mark.parametrize("route", ROUTES)
def test_an_instruction_over_its_limit_is_a_413_naming_it(served: TestClient, route: str) -> None:
    path, body = ROUTES[route]("x" * (MAX_INSTRUCTION_CHARS + 1))
    response = served.post(path, json=body)
    assert response.status_code == 413
    answer = response.json()
    message = answer.get("message") or answer["error"]  # Cohere's shape on /v1 and /v2, TEI's elsewhere
    assert message.startswith(f"instruction: {MAX_INSTRUCTION_CHARS + 1} characters")
    assert f"limit of {MAX_INSTRUCTION_CHARS}" in message


@pytest.mark.parametrize("route", ["cohere-v2", "tei"])
def test_an_instruction_that_is_not_a_string_is_a_422_naming_it(served: TestClient, route: str) -> None:
    path, body = ROUTES[route](None)
    response = served.post(path, json={**body, "instruction": 5})
    assert response.status_code == 422
    assert "instruction" in response.text


def test_a_long_document_is_read_in_windows_with_the_instruction(served: TestClient, qwen3_reranker: Reranker) -> None:
    long = "the giant panda is a bear native to south central china. pandas eat bamboo. " * 60  # ~1,000 tokens
    documents = ["hi", long]
    body = {"query": QUERY, "documents": documents, "instruction": INSTRUCTION, "aggregate": "mean"}
    response = served.post("/v2/rerank", json=body)
    assert response.status_code == 200, response.text
    results = {r["index"]: r for r in response.json()["results"]}
    expected = {
        r.index: r for r in qwen3_reranker.rerank(QUERY, documents, instruction=INSTRUCTION, aggregate="mean").results
    }
    assert expected[1].chunks > 1
    assert results[1]["chunks"] == expected[1].chunks
    assert expected[1].span is not None
    assert results[1]["span"] == {"start": expected[1].span.start, "end": expected[1].span.end}
    for index, item in results.items():
        assert item["relevance_score"] == pytest.approx(expected[index].relevance_score, abs=1e-6)


def test_info_names_the_family_and_its_instruction(served: TestClient) -> None:
    info = served.get("/info").json()
    assert info["family"] == "qwen3-reranker"
    assert info["takes_instruction"] is True
    assert info["default_instruction"] == QWEN3_DEFAULT
    assert info["scoring"]["family"] == "qwen3-reranker"
    assert info["scoring"]["instruction"] == QWEN3_DEFAULT


def test_the_servers_instruction_is_the_default_of_its_requests(tiny_qwen3_dir: Path, qwen3_reranker: Reranker) -> None:
    """`crossrank serve --instruction ...`: requests without one run with it; /info says so."""
    load = lambda: Reranker(str(tiny_qwen3_dir), device="cpu", dtype="float32", instruction=INSTRUCTION)  # noqa: E731
    with TestClient(create_app(ServerOptions(model_name="qwen3-tiny"), load=load)) as client:
        _ready(client)
        assert client.get("/info").json()["default_instruction"] == INSTRUCTION
        path, body = _tei(None)
        got = _scores("tei", client.post(path, json=body).json())
    expected = _expected(qwen3_reranker, INSTRUCTION)
    assert got == {i: pytest.approx(expected[i][0], abs=1e-6) for i in got}


def test_requests_with_other_instructions_share_passes_and_keep_their_scores(
    tiny_qwen3_dir: Path, qwen3_reranker: Reranker
) -> None:
    """Concurrent requests with two instructions are micro-batched together, each scored with its own."""
    instructions = [None, INSTRUCTION, None, INSTRUCTION]

    async def run() -> tuple[list[dict[int, float]], float]:
        load = lambda: Reranker(str(tiny_qwen3_dir), device="cpu", dtype="float32")  # noqa: E731
        app = create_app(ServerOptions(model_name="qwen3", queue=QueueOptions(max_wait_ms=300)), load=load)
        async with app.router.lifespan_context(app):
            while app.state.service.state.status == "loading":
                await asyncio.sleep(0.01)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as client:
                before = metric((await client.get("/metrics")).text, "crossrank_forward_passes_total")
                bodies = [_tei(instruction) for instruction in instructions]
                answers = await asyncio.gather(*(client.post(path, json=body) for path, body in bodies))
                passes = metric((await client.get("/metrics")).text, "crossrank_forward_passes_total") - before
        return [_scores("tei", answer.json()) for answer in answers], passes

    scores, passes = asyncio.run(run())
    assert passes < len(instructions), passes  # the requests shared forward passes
    for got, instruction in zip(scores, instructions, strict=True):
        assert got == {
            i: pytest.approx(logit, abs=1e-6) for i, (logit, _) in _expected(qwen3_reranker, instruction).items()
        }


def test_a_cross_encoder_ignores_an_instruction(fake_model_dir: Path, fake_reranker: Reranker) -> None:
    load = lambda: Reranker(str(fake_model_dir), backend="fake")  # noqa: E731
    with TestClient(create_app(ServerOptions(model_name="fake"), load=load)) as client:
        _ready(client)
        info = client.get("/info").json()
        assert (info["family"], info["takes_instruction"], info["default_instruction"]) == (
            "cross-encoder",
            False,
            None,
        )
        assert "instruction" not in info["scoring"]
        answers = [_scores("tei", client.post(_tei(i)[0], json=_tei(i)[1]).json()) for i in (None, INSTRUCTION)]
    expected = {index: pytest.approx(score, abs=1e-6) for index, (score, _) in _expected(fake_reranker, None).items()}
    assert answers == [expected, expected]


def test_the_playground_has_an_instruction_box_in_each_option_set(served: TestClient) -> None:
    # app.js sends every [data-option] field that is filled in, by its name.
    page = served.get("/ui").text
    boxes = re.findall(r'<input id="instruction-([ab])" data-option="instruction"[^>]*maxlength="(\d+)"', page)
    assert boxes == [("a", str(MAX_INSTRUCTION_CHARS)), ("b", str(MAX_INSTRUCTION_CHARS))]


@pytest.mark.slow
def test_crossrank_serve_and_the_cohere_sdk(tiny_qwen3_dir: Path, qwen3_reranker: Reranker) -> None:
    """The real server process on the decoder reranker; the Cohere SDK sends the instruction as an extra field."""
    cohere = pytest.importorskip("cohere", reason="the cohere SDK is in the dev extra")
    with running_server(["-m", str(tiny_qwen3_dir), "--device", "cpu", "--max-wait-ms", "5"]) as server:
        client = cohere.ClientV2(api_key="any key: this server has no auth", base_url=server.url)
        default = client.rerank(model="qwen3", query=QUERY, documents=DOCS, top_n=2)
        instructed = client.rerank(
            model="qwen3",
            query=QUERY,
            documents=DOCS,
            top_n=2,
            request_options={"additional_body_parameters": {"instruction": INSTRUCTION}},
        )
        info = httpx.get(f"{server.url}/info", timeout=10).json()
    assert info["family"] == "qwen3-reranker"
    for response, instruction in ((default, None), (instructed, INSTRUCTION)):
        expected = qwen3_reranker.rerank(QUERY, DOCS, top_n=2, instruction=instruction).results
        assert [r.index for r in response.results] == [r.index for r in expected]
        for got, want in zip(response.results, expected, strict=True):
            assert got.relevance_score == pytest.approx(want.relevance_score, abs=1e-5)
