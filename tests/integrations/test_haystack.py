"""crossrank.integrations.haystack against the real haystack-ai: the same ranking and scores as ``Reranker.rerank``
in process (fast, fake backend; slow, the English model) and over HTTP against a real ``crossrank serve`` (slow),
serialisation (component and pipeline), and docs/clients/haystack.md run as written (slow)."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path

import pytest
from framework_cases import LONG, QUERY, TEXTS, assert_ranked_like, expected
from snippets import python_blocks

from conftest import STRICT_KEYS
from crossrank import Reranker
from crossrank.errors import BackendError, ConfigError, InputError
from server_process import ServerProcess, free_port

pytest.importorskip("haystack", reason="the haystack extra is in the dev extra")

from haystack import Document, Pipeline
from haystack.utils import Secret

from crossrank.integrations.haystack import CrossrankRanker

ALLOWED = ["crossrank.integrations.haystack"]


@pytest.fixture(scope="module")
def fake_ranker(fake_model_dir: Path) -> CrossrankRanker:
    """A warmed-up ranker on the fake backend (loaded from the folder, as a saved pipeline would load it)."""
    ranker = CrossrankRanker(model=str(fake_model_dir), model_kwargs={"backend": "fake"}, top_k=3)
    ranker.warm_up()
    return ranker


def _documents(texts: list[str]) -> list[Document]:
    return [Document(content=text, meta={"n": i}) for i, text in enumerate(texts)]


def _got(answer: dict[str, list[Document]]) -> list[tuple[str, float]]:
    return [(str(d.content), float(d.score or 0.0)) for d in answer["documents"]]


def test_run_ranks_as_the_reranker(fake_ranker: CrossrankRanker, fake_reranker: Reranker) -> None:
    documents = _documents(TEXTS)
    answer = fake_ranker.run(QUERY, documents)
    assert _got(answer) == expected(fake_reranker, TEXTS, 3)
    assert _got(fake_ranker.run(QUERY, documents, top_k=1)) == expected(fake_reranker, TEXTS, 1)
    # Copies with their meta; the caller's documents have no score.
    assert [d.meta["n"] for d in answer["documents"]] == [TEXTS.index(text) for text, _ in _got(answer)]
    assert all(d.score is None for d in documents)


def test_run_async_ranks_as_the_reranker(fake_ranker: CrossrankRanker, fake_reranker: Reranker) -> None:
    answer = asyncio.run(fake_ranker.run_async(QUERY, _documents(TEXTS), top_k=2))
    assert _got(answer) == expected(fake_reranker, TEXTS, 2)


def test_long_document_options_pass_through(fake_model_dir: Path, fake_reranker: Reranker) -> None:
    texts = [LONG, *TEXTS]
    options = {"max_length": 32, "aggregate": "mean"}
    ranker = CrossrankRanker(model=str(fake_model_dir), model_kwargs={"backend": "fake"}, top_k=None, options=options)
    got = _got(ranker.run(QUERY, _documents(texts)))
    assert got == expected(fake_reranker, texts, None, **options)
    assert dict(got)[LONG] != dict(expected(fake_reranker, texts, None))[LONG]


def test_serialisation_round_trip(fake_ranker: CrossrankRanker, fake_reranker: Reranker) -> None:
    data = fake_ranker.to_dict()
    assert data["type"] == "crossrank.integrations.haystack.CrossrankRanker"
    assert data["init_parameters"]["api_key"] == {"type": "env_var", "env_vars": ["CROSSRANK_API_KEY"], "strict": False}
    restored = CrossrankRanker.from_dict(copy.deepcopy(data))
    assert restored.to_dict() == data
    pipeline = Pipeline()
    pipeline.add_component("ranker", restored)
    loaded = Pipeline.loads(pipeline.dumps(), allowed_modules=ALLOWED)
    answer = loaded.run({"ranker": {"query": QUERY, "documents": _documents(TEXTS)}})
    assert _got(answer["ranker"]) == expected(fake_reranker, TEXTS, 3)


def test_a_key_given_as_a_token_is_not_saved() -> None:
    ranker = CrossrankRanker(base_url="http://127.0.0.1:1", api_key=Secret.from_token("s3cret"))
    with pytest.raises(ValueError, match=r"[Cc]annot serialize token-based secret"):
        ranker.to_dict()


def test_bad_top_k_and_no_documents(fake_ranker: CrossrankRanker) -> None:
    with pytest.raises(ConfigError, match="top_k must be a positive integer"):
        CrossrankRanker(model="unused", top_k=0)
    with pytest.raises(InputError, match="top_k must be a positive integer"):
        fake_ranker.run(QUERY, _documents(TEXTS), top_k=-1)
    assert fake_ranker.run(QUERY, []) == {"documents": []}


def test_unknown_option_names_the_fields() -> None:
    with pytest.raises(ConfigError, match="unknown rerank option\\(s\\): chunk_size"):
        CrossrankRanker(model="unused", options={"chunk_size": 5})


def test_server_down_is_a_backend_error() -> None:
    ranker = CrossrankRanker(base_url=f"http://127.0.0.1:{free_port()}", timeout=5)
    with pytest.raises(BackendError, match="cannot reach the crossrank server"):
        ranker.run(QUERY, _documents(TEXTS))


@pytest.mark.slow
def test_real_model_in_process_and_over_http(
    english_reranker: Reranker, english_model_dir: Path, strict_server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = [LONG, *TEXTS]
    local = CrossrankRanker(model=str(english_model_dir), model_kwargs={"device": "cpu", "dtype": "float32"}, top_k=3)
    local.warm_up()
    assert _got(local.run(QUERY, _documents(texts))) == expected(english_reranker, texts, 3)
    # The default key: CROSSRANK_API_KEY.
    monkeypatch.setenv("CROSSRANK_API_KEY", STRICT_KEYS[0])
    remote = CrossrankRanker(base_url=strict_server.url, top_k=None, options={"aggregate": "topk_mean:2"})
    want = expected(english_reranker, texts, None, aggregate="topk_mean:2")
    for got in (
        _got(remote.run(QUERY, _documents(texts))),
        _got(asyncio.run(remote.run_async(QUERY, _documents(texts)))),
    ):
        assert_ranked_like(got, want, abs=1e-5)


@pytest.mark.slow
def test_the_page_runs_as_written(
    english_model_dir: Path, strict_server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks = python_blocks("clients/haystack.md", model=english_model_dir, url=strict_server.url)
    assert len(blocks) == 3
    monkeypatch.setenv("CROSSRANK_API_KEY", STRICT_KEYS[0])
    namespace: dict[str, object] = {}
    exec(blocks[0], namespace)
    # The page loads the model with Reranker's defaults: so does the reference, on what the retriever gave.
    retrieved = namespace["pipeline"].run(  # type: ignore[attr-defined]
        {"retriever": {"query": QUERY}, "ranker": {"query": QUERY}}, include_outputs_from={"retriever"}
    )["retriever"]["documents"]
    texts = [str(d.content) for d in retrieved]
    with Reranker(str(english_model_dir)) as reference:
        want = expected(reference, texts, 2)
        want_remote = expected(reference, ["hi", "The giant panda is a bear."], 2)
    assert len(texts) == 3
    assert _got(namespace["answer"]["ranker"]) == want  # type: ignore[index]
    exec(blocks[1], namespace)
    got = _got(namespace["ranked"])  # type: ignore[arg-type]
    assert_ranked_like(got, want_remote, abs=1e-4)
    exec(blocks[2], namespace)
    again = namespace["restored"].run({"retriever": {"query": QUERY}, "ranker": {"query": QUERY}})  # type: ignore[attr-defined]
    assert _got(again["ranker"]) == want
