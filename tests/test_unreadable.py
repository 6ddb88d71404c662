"""Texts a model cannot read (mostly unknown tokens) are counted in usage and warned about, not silently ranked.

Fast tests on the fake backend (``fake_reranker``: the real XLM-R tokenizer, which maps runic letters to <unk>);
the demo on the real English model, which cannot read Chinese.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from crossrank import InputError, Reranker
from crossrank.server import ServerOptions, create_app
from crossrank.tools.demo import run_demo

RUNES = "ᚠᚢᚦᚨᚱᚲ ᚷᚹ"  # XLM-R: ▁ <unk> ▁ <unk>


def test_unreadable_texts_are_counted_and_logged_fake_backend(
    fake_reranker: Reranker, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="crossrank.reranker"):
        result = fake_reranker.rerank("panda", [RUNES, "a giant panda", RUNES + " " + RUNES])
    assert result.usage.unreadable_texts == 2
    assert "2 of the texts are mostly tokens" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="crossrank.reranker"):
        readable = fake_reranker.rerank("panda", ["a giant panda", "bamboo"])
    assert readable.usage.unreadable_texts == 0 and caplog.text == ""
    assert fake_reranker.rerank(RUNES, ["a giant panda"]).usage.unreadable_texts == 1  # the query counts too


def test_the_v1_answer_carries_the_count_only_when_some_fake_backend(fake_model_dir: Path) -> None:
    app = create_app(ServerOptions(model_name="m"), load=lambda: Reranker(str(fake_model_dir), backend="fake"))
    with TestClient(app) as client:
        deadline = time.monotonic() + 60
        while client.get("/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        some = client.post("/v1/rerank", json={"query": "panda", "documents": [RUNES, "a panda"]}).json()
        none = client.post("/v1/rerank", json={"query": "panda", "documents": ["a panda"]}).json()
    assert some["usage"]["unreadable_texts"] == 1
    assert "unreadable_texts" not in none["usage"]


@pytest.mark.slow
def test_the_demo_refuses_a_language_the_model_cannot_read(english_reranker: Reranker) -> None:
    with pytest.raises(InputError, match="cannot read the 'zh' examples"):
        run_demo(english_reranker, "zh")
    assert run_demo(english_reranker, "en").rows
