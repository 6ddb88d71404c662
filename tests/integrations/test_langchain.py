"""crossrank.integrations.langchain against the real langchain-core (and langchain-classic's CrossEncoderReranker):
the same ranking and scores as ``Reranker.rerank`` in process (fast, fake backend; slow, the English model) and over
HTTP against a real ``crossrank serve`` (slow), and docs/clients/langchain.md run as written (slow)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from framework_cases import LONG, QUERY, TEXTS, assert_ranked_like, expected
from snippets import python_blocks

from conftest import STRICT_KEYS
from crossrank import Reranker
from crossrank.errors import BackendError, ConfigError
from server_process import ServerProcess, free_port

pytest.importorskip("langchain_core", reason="the langchain extra is in the dev extra")

from langchain_core.documents import Document

from crossrank.integrations.langchain import CrossrankCrossEncoder, CrossrankRerank


def _documents(texts: list[str]) -> list[Document]:
    return [Document(page_content=text, metadata={"n": i}, id=f"doc-{i}") for i, text in enumerate(texts)]


def _got(documents: list[Document]) -> list[tuple[str, float]]:
    return [(d.page_content, d.metadata["relevance_score"]) for d in documents]


def test_compressor_ranks_as_the_reranker(fake_reranker: Reranker) -> None:
    documents = _documents(TEXTS)
    best = CrossrankRerank(reranker=fake_reranker, top_n=2).compress_documents(documents, QUERY)
    assert _got(list(best)) == expected(fake_reranker, TEXTS, 2)
    # Copies: each keeps its id and metadata, and the caller's documents are left as they were.
    assert [(d.id, d.metadata["n"]) for d in best] == [
        (f"doc-{TEXTS.index(d.page_content)}", TEXTS.index(d.page_content)) for d in best
    ]
    assert all("relevance_score" not in d.metadata for d in documents)
    everything = CrossrankRerank(reranker=fake_reranker, top_n=None).compress_documents(documents, QUERY)
    assert _got(list(everything)) == expected(fake_reranker, TEXTS, None)


def test_async_compressor_ranks_as_the_reranker(fake_reranker: Reranker) -> None:
    compressor = CrossrankRerank(reranker=fake_reranker, top_n=3)
    best = asyncio.run(compressor.acompress_documents(_documents(TEXTS), QUERY))
    assert _got(list(best)) == expected(fake_reranker, TEXTS, 3)


def test_long_document_options_pass_through(fake_reranker: Reranker) -> None:
    texts = [LONG, *TEXTS]
    options = {"max_length": 32, "aggregate": "mean"}
    compressor = CrossrankRerank(reranker=fake_reranker, top_n=None, options=options)
    got = _got(list(compressor.compress_documents(_documents(texts), QUERY)))
    assert got == expected(fake_reranker, texts, None, **options)
    # The options changed the long document's score, so the comparison above could fail.
    assert dict(got)[LONG] != dict(expected(fake_reranker, texts, None))[LONG]


def test_cross_encoder_scores_pairs_as_the_reranker(fake_reranker: Reranker) -> None:
    classic = pytest.importorskip("langchain_classic.retrievers.document_compressors")
    encoder = CrossrankCrossEncoder(reranker=fake_reranker)
    pairs = [(QUERY, TEXTS[0]), ("where is Paris?", TEXTS[2]), (QUERY, TEXTS[1]), ("where is Paris?", TEXTS[0])]
    want = [fake_reranker.compute_score(pair, normalize=True) for pair in pairs]
    assert encoder.score(pairs) == pytest.approx(want, abs=1e-12)
    reranker = classic.CrossEncoderReranker(model=encoder, top_n=2)
    best = reranker.compress_documents(_documents(TEXTS), QUERY)
    assert [d.page_content for d in best] == [text for text, _ in expected(fake_reranker, TEXTS, 2)]


@pytest.mark.parametrize("top_n", [0, -1])
def test_top_n_must_be_positive(fake_reranker: Reranker, top_n: int) -> None:
    with pytest.raises(ConfigError, match="top_n must be a positive integer"):
        CrossrankRerank(reranker=fake_reranker, top_n=top_n)


def test_no_documents_give_none(fake_reranker: Reranker) -> None:
    compressor = CrossrankRerank(reranker=fake_reranker)
    assert compressor.compress_documents([], QUERY) == []
    assert asyncio.run(compressor.acompress_documents([], QUERY)) == []


def test_one_source_only(fake_reranker: Reranker) -> None:
    with pytest.raises(ConfigError, match="exactly one of model=, reranker= and base_url="):
        CrossrankRerank(reranker=fake_reranker, base_url="http://127.0.0.1:1")
    with pytest.raises(ConfigError, match="exactly one of"):
        CrossrankRerank()


def test_server_down_is_a_backend_error() -> None:
    compressor = CrossrankRerank(base_url=f"http://127.0.0.1:{free_port()}", timeout=5)
    with pytest.raises(BackendError, match="cannot reach the crossrank server") as raised:
        compressor.compress_documents(_documents(TEXTS), QUERY)
    assert "crossrank serve" in str(raised.value.fix)


@pytest.mark.slow
def test_real_model_in_process_and_over_http(
    english_reranker: Reranker, english_model_dir: Path, strict_server: ServerProcess
) -> None:
    texts = [LONG, *TEXTS]
    local = CrossrankRerank(model=str(english_model_dir), model_kwargs={"device": "cpu", "dtype": "float32"}, top_n=3)
    assert _got(list(local.compress_documents(_documents(texts), QUERY))) == expected(english_reranker, texts, 3)
    remote = CrossrankRerank(
        base_url=strict_server.url, api_key=STRICT_KEYS[0], top_n=None, options={"aggregate": "mean"}
    )
    want = expected(english_reranker, texts, None, aggregate="mean")
    for got in (
        _got(list(remote.compress_documents(_documents(texts), QUERY))),
        _got(list(asyncio.run(remote.acompress_documents(_documents(texts), QUERY)))),
    ):
        assert_ranked_like(got, want, abs=1e-5)
    encoder = CrossrankCrossEncoder(base_url=strict_server.url, api_key=STRICT_KEYS[0])
    pairs = [(QUERY, text) for text in TEXTS]
    assert encoder.score(pairs) == pytest.approx(english_reranker.compute_score(pairs, normalize=True), abs=1e-5)


@pytest.mark.slow
def test_the_page_runs_as_written(english_model_dir: Path, strict_server: ServerProcess) -> None:
    blocks = python_blocks("clients/langchain.md", model=english_model_dir, url=strict_server.url)
    assert len(blocks) == 3
    texts = ["hi", "The giant panda is a bear native to China.", "Paris is the capital of France."]
    # The page loads the model with Reranker's defaults: so does the reference.
    with Reranker(str(english_model_dir)) as reference:
        want = expected(reference, texts, 2)
    namespace: dict[str, object] = {"KEY": STRICT_KEYS[0]}
    exec(blocks[0], namespace)
    assert _got(namespace["best"]) == want  # type: ignore[arg-type]
    exec(blocks[1], namespace)
    got = _got(namespace["best"])  # type: ignore[arg-type]
    assert_ranked_like(got, want, abs=1e-4)
    exec(blocks[2], namespace)
    assert [d.page_content for d in namespace["best_by_cross_encoder"]] == [text for text, _ in want]  # type: ignore[attr-defined]
