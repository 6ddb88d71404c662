"""Official client SDKs against the real server, unchanged but for the base URL."""

from __future__ import annotations

import pytest

from conftest import STRICT_KEYS
from crossrank import Reranker
from server_process import ServerProcess

cohere = pytest.importorskip("cohere", reason="the cohere SDK is in the dev extra")

pytestmark = pytest.mark.slow

QUERY = "what is panda?"
DOCS = ["hi", "The giant panda is a bear native to China.", "Paris is the capital of France."]


def test_cohere_client_v2(strict_server: ServerProcess, english_reranker: Reranker) -> None:
    client = cohere.ClientV2(api_key=STRICT_KEYS[1], base_url=strict_server.url)
    response = client.rerank(model="rerank-v3.5", query=QUERY, documents=DOCS, top_n=2)
    expected = english_reranker.rerank(QUERY, DOCS, top_n=2).results
    assert [r.index for r in response.results] == [r.index for r in expected]
    for got, want in zip(response.results, expected, strict=True):
        assert got.relevance_score == pytest.approx(want.relevance_score, abs=1e-5)
    assert response.meta is not None and response.meta.api_version is not None
    assert response.meta.api_version.version == "2"


def test_cohere_client_v1_with_documents(open_server: ServerProcess) -> None:
    client = cohere.Client(api_key="any key: this server has no auth", base_url=open_server.url)
    response = client.rerank(model="rerank-english-v3.0", query=QUERY, documents=DOCS, return_documents=True)
    assert response.results[0].index == 1
    assert response.results[0].document is not None
    assert response.results[0].document.text == DOCS[1]


def test_cohere_client_errors_are_typed(strict_server: ServerProcess) -> None:
    bad_key = cohere.ClientV2(api_key="wrong", base_url=strict_server.url)
    with pytest.raises(cohere.core.ApiError) as denied:
        bad_key.rerank(model="m", query=QUERY, documents=DOCS)
    assert denied.value.status_code == 401
    client = cohere.ClientV2(api_key=STRICT_KEYS[0], base_url=strict_server.url)
    with pytest.raises(cohere.core.ApiError) as too_many:
        client.rerank(model="m", query=QUERY, documents=["d"] * 101)
    assert too_many.value.status_code == 413
    assert "limit of 100" in too_many.value.body["message"]
