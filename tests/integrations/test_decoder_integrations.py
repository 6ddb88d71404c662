"""The integrations on a decoder reranker (the tiny Qwen3-Reranker of tests/decoders.py): the ``instruction``
option reaches the model in process, over HTTP (``/v2/rerank``'s body, answered by the app in this process) and in
the Celery task (run eagerly: the task's code, without a broker), and each gives ``Reranker.rerank``'s scores."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from crossrank import Reranker
from crossrank.config import RerankOptions
from crossrank.errors import ConfigError
from crossrank.integrations._source import HttpSource, open_source
from crossrank.server import ServerOptions, create_app
from crossrank.settings import Settings
from crossrank.types import RerankResult

QUERY = "what is a panda?"
DOCS = ["pandas eat bamboo", "Paris is the capital of France.", "the giant panda is a bear"]
INSTRUCTION = "Judge whether the passage names a capital city"
OTHER = "Judge whether the passage is about animals"


@pytest.fixture(scope="module")
def qwen3(tiny_qwen3_dir: Path) -> Iterator[Reranker]:
    with Reranker(str(tiny_qwen3_dir), device="cpu", dtype="float32") as reranker:
        reranker.rerank("warm-up", ["warm-up"])  # the first forward pass pays for torch's lazy set-up
        yield reranker


def _scores(result: RerankResult) -> dict[int, float]:
    return {r.index: r.relevance_score for r in result.results}


def _expected(reranker: Reranker, instruction: str | None) -> dict[int, Any]:
    return {
        i: pytest.approx(s, abs=1e-6) for i, s in _scores(reranker.rerank(QUERY, DOCS, instruction=instruction)).items()
    }


def test_the_in_process_source_passes_the_instruction(qwen3: Reranker) -> None:
    source = open_source(reranker=qwen3, options={"instruction": INSTRUCTION})
    assert _scores(source.rerank(QUERY, DOCS, None)) == _expected(qwen3, INSTRUCTION)
    assert _scores(open_source(reranker=qwen3).rerank(QUERY, DOCS, None)) == _expected(qwen3, None)


def test_the_http_source_sends_the_instruction_to_v2_rerank(tiny_qwen3_dir: Path, qwen3: Reranker) -> None:
    app = create_app(
        ServerOptions(model_name="qwen3"), load=lambda: Reranker(str(tiny_qwen3_dir), device="cpu", dtype="float32")
    )
    sent: list[dict[str, Any]] = []

    def record(request: httpx.Request) -> None:
        if request.method == "POST":
            sent.append(json.loads(request.read()))

    with TestClient(app, base_url="http://crossrank.test") as client:
        client.event_hooks["request"].append(record)
        deadline = time.monotonic() + 30
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        source = open_source(base_url="http://crossrank.test", options={"instruction": INSTRUCTION})
        assert isinstance(source, HttpSource)
        source._client = client  # the app in this process answers, as crossrank serve would
        result = source.rerank(QUERY, DOCS, None)
    assert sent[-1]["instruction"] == INSTRUCTION
    # The server answers sigmoid(logit) and the source turns it back into the logit.
    assert _scores(result) == _expected(qwen3, INSTRUCTION)


def test_celery_task_options_take_an_instruction(
    tiny_qwen3_dir: Path, qwen3: Reranker, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("celery", reason="the celery extra is in the dev extra")
    from crossrank.integrations import celery as integration

    monkeypatch.setattr(integration, "_state", {})  # this test's model, not one another test loaded
    # The worker's own instruction (crossrank worker --instruction) is the default of its tasks; a task's wins.
    settings = Settings(model=str(tiny_qwen3_dir), device="cpu", dtype="float32", instruction=INSTRUCTION)
    task = integration.create_celery(settings).tasks[integration.TASK_NAME]
    answers = [
        task.apply(kwargs={"query": QUERY, "documents": DOCS, "options": options}).get()
        for options in (None, {"instruction": OTHER})
    ]
    for answer, instruction in zip(answers, (INSTRUCTION, OTHER), strict=True):
        got = {r["index"]: r["relevance_score"] for r in answer["results"]}
        assert got == _expected(qwen3, instruction)
    assert RerankOptions.from_dict({"instruction": INSTRUCTION}).instruction == INSTRUCTION
    with pytest.raises(ConfigError, match="unknown rerank option\\(s\\): instructions"):
        RerankOptions.from_dict({"instructions": INSTRUCTION})
