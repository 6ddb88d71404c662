"""crossrank.integrations.llama_index against the real llama-index-core: the same ranking and scores as
``Reranker.rerank`` in process (fast, fake backend; slow, the English model) and over HTTP against a real
``crossrank serve`` (slow), and docs/clients/llama-index.md run as written (slow)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from framework_cases import LONG, QUERY, TEXTS, assert_ranked_like, expected
from snippets import python_blocks

from conftest import STRICT_KEYS
from crossrank import Reranker
from crossrank.errors import BackendError, ConfigError, InputError
from server_process import ServerProcess, free_port

pytest.importorskip("llama_index.core", reason="the llama-index extra is in the dev extra")

from llama_index.core.schema import NodeWithScore, TextNode

from crossrank.integrations.llama_index import CrossrankRerank


def _nodes(texts: list[str]) -> list[NodeWithScore]:
    return [NodeWithScore(node=TextNode(text=text, id_=f"node-{i}"), score=0.5) for i, text in enumerate(texts)]


def _got(nodes: list[NodeWithScore]) -> list[tuple[str, float]]:
    return [(n.node.get_content(), float(n.score or 0.0)) for n in nodes]


def test_postprocessor_ranks_as_the_reranker(fake_reranker: Reranker) -> None:
    nodes = _nodes(TEXTS)
    best = CrossrankRerank(reranker=fake_reranker, top_n=2).postprocess_nodes(nodes, query_str=QUERY)
    assert _got(best) == expected(fake_reranker, TEXTS, 2)
    # The same nodes, in new NodeWithScore objects: the retriever's list keeps its scores.
    assert [n.node.node_id for n in best] == [f"node-{TEXTS.index(text)}" for text, _ in _got(best)]
    assert all(n.score == 0.5 for n in nodes)
    everything = CrossrankRerank(reranker=fake_reranker, top_n=None).postprocess_nodes(nodes, query_str=QUERY)
    assert _got(everything) == expected(fake_reranker, TEXTS, None)


def test_async_postprocessor_ranks_as_the_reranker(fake_reranker: Reranker) -> None:
    postprocessor = CrossrankRerank(reranker=fake_reranker, top_n=3)
    best = asyncio.run(postprocessor.apostprocess_nodes(_nodes(TEXTS), query_str=QUERY))
    assert _got(best) == expected(fake_reranker, TEXTS, 3)


def test_default_keeps_two_as_llama_index_rerankers_do(fake_reranker: Reranker) -> None:
    assert len(CrossrankRerank(reranker=fake_reranker).postprocess_nodes(_nodes(TEXTS), query_str=QUERY)) == 2


def test_long_document_options_pass_through(fake_reranker: Reranker) -> None:
    texts = [LONG, *TEXTS]
    options = {"max_length": 32, "aggregate": "mean"}
    postprocessor = CrossrankRerank(reranker=fake_reranker, top_n=None, options=options)
    got = _got(postprocessor.postprocess_nodes(_nodes(texts), query_str=QUERY))
    assert got == expected(fake_reranker, texts, None, **options)
    assert dict(got)[LONG] != dict(expected(fake_reranker, texts, None))[LONG]


@pytest.mark.parametrize("top_n", [0, -3])
def test_top_n_must_be_positive(fake_reranker: Reranker, top_n: int) -> None:
    with pytest.raises(ConfigError, match="top_n must be a positive integer"):
        CrossrankRerank(reranker=fake_reranker, top_n=top_n)


def test_no_nodes_give_none_and_a_query_is_needed(fake_reranker: Reranker) -> None:
    postprocessor = CrossrankRerank(reranker=fake_reranker)
    assert postprocessor.postprocess_nodes([], query_str=QUERY) == []
    with pytest.raises(InputError, match="needs the query"):
        postprocessor.postprocess_nodes(_nodes(TEXTS))


def test_server_down_is_a_backend_error() -> None:
    postprocessor = CrossrankRerank(base_url=f"http://127.0.0.1:{free_port()}", timeout=5)
    with pytest.raises(BackendError, match="cannot reach the crossrank server"):
        postprocessor.postprocess_nodes(_nodes(TEXTS), query_str=QUERY)
    with pytest.raises(BackendError, match="cannot reach the crossrank server"):
        asyncio.run(postprocessor.apostprocess_nodes(_nodes(TEXTS), query_str=QUERY))


@pytest.mark.slow
def test_real_model_in_process_and_over_http(
    english_reranker: Reranker, english_model_dir: Path, strict_server: ServerProcess
) -> None:
    texts = [LONG, *TEXTS]
    local = CrossrankRerank(model=str(english_model_dir), model_kwargs={"device": "cpu", "dtype": "float32"}, top_n=3)
    assert _got(local.postprocess_nodes(_nodes(texts), query_str=QUERY)) == expected(english_reranker, texts, 3)
    remote = CrossrankRerank(
        base_url=strict_server.url, api_key=STRICT_KEYS[0], top_n=None, options={"max_tokens_per_doc": 16}
    )
    want = expected(english_reranker, texts, None, max_tokens_per_doc=16)
    for got in (
        _got(remote.postprocess_nodes(_nodes(texts), query_str=QUERY)),
        _got(asyncio.run(remote.apostprocess_nodes(_nodes(texts), query_str=QUERY))),
    ):
        assert_ranked_like(got, want, abs=1e-5)


@pytest.mark.slow
def test_the_page_runs_as_written(english_model_dir: Path, strict_server: ServerProcess) -> None:
    blocks = python_blocks("clients/llama-index.md", model=english_model_dir, url=strict_server.url)
    assert len(blocks) == 2
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
