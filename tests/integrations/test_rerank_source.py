"""crossrank.integrations._source, what the LangChain, LlamaIndex and Haystack classes share: in process with a
Reranker or AsyncReranker, over HTTP with its errors mapped to crossrank's (fast: a mock transport; slow: a real
server), and the clear error when a framework is not installed."""

from __future__ import annotations

import asyncio
import importlib
import json
import math
import sys
from pathlib import Path

import httpx
import pytest

from conftest import STRICT_KEYS
from crossrank import AsyncReranker, Reranker
from crossrank.config import RerankOptions
from crossrank.errors import BackendError, ConfigError, InferenceError, InputError, OverloadedError
from crossrank.integrations._source import HttpSource, LocalSource, open_source
from server_process import ServerProcess

QUERY = "what is a panda?"
TEXTS = ["hi", "The giant panda is a bear native to China.", "Paris is the capital of France."]


def _ranking(result: object) -> list[tuple[int, float, float]]:
    return [(r.index, r.score, r.relevance_score) for r in result.results]  # type: ignore[attr-defined]


def test_async_reranker_source_ranks_as_the_reranker(fake_model_dir: Path, fake_reranker: Reranker) -> None:
    want = _ranking(fake_reranker.rerank(QUERY, TEXTS, top_n=2))

    async def both(source: LocalSource) -> tuple[object, object]:
        # A sync call from inside a running loop works too (LangChain's sync API called from async code).
        return await source.arerank(QUERY, TEXTS, 2), source.rerank(QUERY, TEXTS, 2)

    async def main() -> tuple[object, object]:
        async with AsyncReranker(Reranker(str(fake_model_dir), backend="fake")) as queued:
            return await both(LocalSource(queued))

    awaited, called = asyncio.run(main())
    assert _ranking(awaited) == want
    assert _ranking(called) == want


def test_model_kwargs_are_checked(fake_model_dir: Path) -> None:
    source = open_source(model=str(fake_model_dir), model_kwargs={"backend": "fake", "devise": "cpu"})
    with pytest.raises(ConfigError, match="unknown reranker option\\(s\\): devise"):
        source.load()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"base_url": "http://127.0.0.1:1", "options": {"chunk_tokens": 64}}, "over HTTP, a request can set only"),
        ({"base_url": "http://127.0.0.1:1", "model_kwargs": {"device": "cpu"}}, "model_kwargs apply to a model"),
        ({"model": "m", "api_key": "k"}, "api_key= goes with base_url="),
        ({"base_url": "http://127.0.0.1:1", "timeout": 0}, "timeout must be a positive number"),
        ({"model": "m", "base_url": "http://127.0.0.1:1"}, "got model, base_url"),
    ],
)
def test_bad_configurations(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        open_source(**kwargs)  # type: ignore[arg-type]


def _answering(status: int, body: object, headers: dict[str, str] | None = None) -> HttpSource:
    source = HttpSource("http://crossrank.test", api_key="k")
    sent: list[httpx.Request] = []

    def reply(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(status, json=body, headers=headers)

    source._client = httpx.Client(transport=httpx.MockTransport(reply))
    source.sent = sent  # type: ignore[attr-defined]
    return source


def test_the_answer_becomes_a_rerank_result() -> None:
    answer = {
        "results": [
            {"index": 1, "relevance_score": 0.9, "span": {"start": 3, "end": 9}, "chunks": 2},
            {"index": 0, "relevance_score": 0.25},
        ]
    }
    source = _answering(200, answer)
    source.options = RerankOptions(aggregate="mean")
    result = source.rerank(QUERY, TEXTS[:2], 1)
    assert [(r.index, r.relevance_score, r.chunks) for r in result.results] == [(1, 0.9, 2), (0, 0.25, 1)]
    # The logit is sigmoid's inverse: what Reranker.rerank gives as `score`.
    assert result.results[0].score == pytest.approx(math.log(0.9 / 0.1), abs=1e-12)
    assert result.results[0].span is not None and (result.results[0].span.start, result.results[0].span.end) == (3, 9)
    (request,) = source.sent  # type: ignore[attr-defined]
    assert request.url.path == "/v2/rerank"
    assert request.headers["authorization"] == "Bearer k"
    assert json.loads(request.read()) == {"query": QUERY, "documents": TEXTS[:2], "top_n": 1, "aggregate": "mean"}


@pytest.mark.parametrize(
    ("status", "body", "error", "text"),
    [
        (422, {"message": "aggregate: String should match pattern"}, InputError, "422: aggregate: String should"),
        (413, {"message": "documents: more than the limit of 100"}, InputError, "413: documents: more than the limit"),
        (401, {"message": "invalid API key"}, ConfigError, "401: invalid API key"),
        (429, {"message": "overloaded"}, OverloadedError, "429: overloaded"),
        (500, {"message": "boom", "request_id": "r1"}, BackendError, "500: boom"),
        (200, {"not": "a result"}, InferenceError, "answered something other than a rerank result"),
    ],
)
def test_server_answers_map_to_crossrank_errors(status: int, body: object, error: type[Exception], text: str) -> None:
    with pytest.raises(error, match=text):
        _answering(status, body, {"retry-after": "7"}).rerank(QUERY, TEXTS, None)


def test_overloaded_says_when_to_retry() -> None:
    with pytest.raises(OverloadedError) as raised:
        _answering(503, {"message": "busy"}, {"retry-after": "7"}).rerank(QUERY, TEXTS, None)
    assert raised.value.retry_after == 7


@pytest.mark.parametrize(
    ("query", "documents", "top_n", "text"),
    [
        (QUERY, "one document", None, "documents must be a list of strings"),
        (5, TEXTS, None, "query must be a string"),
        (QUERY, TEXTS, 0, "top_n must be a positive integer"),
    ],
)
def test_bad_calls_are_refused_before_sending(query: object, documents: object, top_n: object, text: str) -> None:
    source = _answering(200, {"results": []})
    with pytest.raises(InputError, match=text):
        source.rerank(query, documents, top_n)  # type: ignore[arg-type]
    assert source.sent == []  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("module", "framework", "extra"),
    [
        ("langchain", "langchain_core", "langchain"),
        ("llama_index", "llama_index", "llama-index"),
        ("haystack", "haystack", "haystack"),
    ],
)
def test_a_missing_framework_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, module: str, framework: str, extra: str
) -> None:
    name = f"crossrank.integrations.{module}"
    monkeypatch.delitem(sys.modules, name, raising=False)
    for loaded in [m for m in sys.modules if m == framework or m.startswith(f"{framework}.")]:
        monkeypatch.delitem(sys.modules, loaded)
    monkeypatch.setitem(sys.modules, framework, None)  # type: ignore[arg-type]  # import raises ImportError
    with pytest.raises(ConfigError, match=f"{name} needs") as raised:
        importlib.import_module(name)
    assert raised.value.fix == f"pip install 'crossrank[{extra}]'"


@pytest.mark.slow
def test_a_real_server(strict_server: ServerProcess, english_reranker: Reranker) -> None:
    source = open_source(base_url=strict_server.url, api_key=STRICT_KEYS[0])
    got, want = source.rerank(QUERY, TEXTS, None), english_reranker.rerank(QUERY, TEXTS)
    assert [r.index for r in got.results] == [r.index for r in want.results]
    # The logits recovered from the relevance scores are the model's.
    assert [r.score for r in got.results] == pytest.approx([r.score for r in want.results], abs=1e-4)
    with pytest.raises(ConfigError, match="401: invalid API key") as refused:
        open_source(base_url=strict_server.url, api_key="wrong").rerank(QUERY, TEXTS, None)
    assert "api_key=" in str(refused.value.fix)
    # The server's message names the field and the limit (--max-query-chars 50).
    with pytest.raises(InputError, match=r"413: query: .*limit of 50"):
        source.rerank("x" * 60, TEXTS, None)
    with pytest.raises(InputError, match=r"413: query: .*limit of 50"):
        asyncio.run(source.arerank("x" * 60, TEXTS, None))
