"""Dify's "Hugging Face TEI" model provider against a real ``crossrank serve`` (issue 22): it validates the server
with ``GET /info`` and reranks with ``POST /rerank``.

Dify is not installable as a library, so the few lines it runs are transcribed here from langgenius/dify,
api/core/model_runtime/model_providers/huggingface_tei/tei_helper.py (``TeiHelper._get_tei_extra_parameter``,
``TeiHelper.invoke_rerank``, ``TeiHelper.invoke_tokenize``); the provider sends ``Authorization: Bearer <key>``
when a key is set.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from conftest import STRICT_KEYS
from crossrank import Reranker

pytestmark = pytest.mark.slow

QUERY = "what is panda?"
DOCS = ["hi", "The giant panda is a bear native to China.", "Paris is the capital of France."]


def dify_extra_parameter(server_url: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """TeiHelper._get_tei_extra_parameter, as Dify runs it (RuntimeError where Dify refuses the server)."""
    response = httpx.get(f"{server_url}/info", headers=headers, timeout=10)
    if response.status_code != 200:
        raise RuntimeError(f"get tei model extra parameter failed, status code: {response.status_code}")
    response_json = response.json()
    model_type = response_json.get("model_type", {})
    if len(model_type.keys()) < 1:
        raise RuntimeError("model_type is empty")
    model_type = list(model_type.keys())[0]  # noqa: RUF015  # Dify's line, as it is
    if model_type not in {"embedding", "reranker"}:
        raise RuntimeError(f"invalid model_type: {model_type}")
    return {
        "model_type": model_type,
        "max_input_length": response_json.get("max_input_length", 512),
        "max_client_batch_size": response_json.get("max_client_batch_size", 1),
    }


def dify_invoke_rerank(server_url: str, query: str, docs: list[str], headers: dict[str, str]) -> Any:
    """TeiHelper.invoke_rerank."""
    params = {"query": query, "texts": docs, "return_text": True}
    response = httpx.post(f"{server_url}/rerank", json=params, headers=headers)
    response.raise_for_status()
    return response.json()


def dify_invoke_tokenize(server_url: str, texts: list[str], headers: dict[str, str]) -> Any:
    """TeiHelper.invoke_tokenize."""
    response = httpx.post(f"{server_url}/tokenize", json={"inputs": texts}, headers=headers)
    response.raise_for_status()
    return response.json()


def test_dify_validates_and_reranks(strict_server: Any, english_reranker: Reranker) -> None:
    headers = {"Authorization": f"Bearer {STRICT_KEYS[0]}"}
    with pytest.raises(RuntimeError, match="status code: 401"):
        dify_extra_parameter(strict_server.url)  # no key: refused, as on every other route
    extra = dify_extra_parameter(strict_server.url, headers)
    # Dify's rerank model then requires model_type "reranker" (huggingface_tei/rerank/rerank.py).
    assert extra == {"model_type": "reranker", "max_input_length": 512, "max_client_batch_size": 100}

    ranked = dify_invoke_rerank(strict_server.url, QUERY, DOCS, headers)
    expected = {r.index: r.relevance_score for r in english_reranker.rerank(QUERY, DOCS).results}
    assert [r["index"] for r in ranked] == sorted(expected, key=expected.__getitem__, reverse=True)
    for r in ranked:
        assert r["text"] == DOCS[r["index"]]
        assert r["score"] == pytest.approx(expected[r["index"]], abs=1e-4)

    [tokens] = dify_invoke_tokenize(strict_server.url, ["giant panda"], headers)
    assert [t["text"] for t in tokens] == ["[CLS]", "giant", "panda", "[SEP]"]
    assert [(t["start"], t["stop"]) for t in tokens[1:-1]] == [(0, 5), (6, 11)]
