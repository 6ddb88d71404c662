"""LiteLLM's ``infinity/`` and ``cohere/`` rerank providers against a real ``crossrank serve`` (issue 22): the
scores are ``Reranker.rerank``'s on the same model.

LiteLLM fetches a model price list from the internet when it is imported unless ``LITELLM_LOCAL_MODEL_COST_MAP``
is set; it is set before the import, so every request of these tests stays on loopback.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from conftest import STRICT_KEYS
from crossrank import Reranker

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def litellm() -> Any:
    """LiteLLM, imported only when these tests run (the import takes seconds) and never before the variable is set."""
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    return pytest.importorskip("litellm", reason="LiteLLM is in the dev extra")


QUERY = "what is panda?"
DOCS = ["hi", "The giant panda is a bear native to China.", "Paris is the capital of France."]


def _logged(server: Any, text: str, times: int) -> bool:
    """Whether the server's access log has ``text`` ``times`` times at least (it is written just after the answer)."""
    deadline = time.monotonic() + 5
    while server.log().count(text) < times and time.monotonic() < deadline:
        time.sleep(0.05)
    return bool(server.log().count(text) >= times)


def _check(response: Any, reranker: Reranker, *, top_n: int, echoed: bool) -> None:
    expected = {r.index: r.relevance_score for r in reranker.rerank(QUERY, DOCS).results}
    best = sorted(expected, key=expected.__getitem__, reverse=True)[:top_n]
    assert [r["index"] for r in response.results] == best
    for r in response.results:
        assert r["relevance_score"] == pytest.approx(expected[r["index"]], abs=1e-4)
        assert r["document"]["text"] == DOCS[r["index"]] if echoed else "document" not in r


def test_infinity_provider_at_the_infinity_base_url(
    litellm: Any, strict_server: Any, english_reranker: Reranker
) -> None:
    response = litellm.rerank(
        model="infinity/minilm",
        query=QUERY,
        documents=DOCS,
        top_n=2,
        return_documents=True,
        api_base=f"{strict_server.url}/infinity",
        api_key=STRICT_KEYS[0],
    )
    _check(response, english_reranker, top_n=2, echoed=True)
    assert _logged(strict_server, '"path": "/infinity/rerank"', 1)
    assert response.meta["tokens"]["input_tokens"] > 0  # read from Infinity's usage.prompt_tokens


def test_infinity_provider_is_refused_without_the_key(litellm: Any, strict_server: Any) -> None:
    with pytest.raises(Exception, match="API key"):
        litellm.rerank(
            model="infinity/minilm",
            query=QUERY,
            documents=DOCS,
            api_base=f"{strict_server.url}/infinity",
            api_key="wrong-key",
        )


def test_cohere_provider(litellm: Any, strict_server: Any, english_reranker: Reranker) -> None:
    v2_calls = strict_server.log().count('"path": "/v2/rerank"')
    response = litellm.rerank(
        model="cohere/minilm",
        query=QUERY,
        documents=DOCS,
        top_n=3,
        return_documents=True,
        api_base=strict_server.url,
        api_key=STRICT_KEYS[0],
    )
    _check(response, english_reranker, top_n=3, echoed=False)
    # Given the server's root, this LiteLLM posts Cohere v2 (/v2/rerank), which echoes no documents.
    assert _logged(strict_server, '"path": "/v2/rerank"', v2_calls + 1)
