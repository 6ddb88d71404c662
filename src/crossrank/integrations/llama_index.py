"""LlamaIndex: ``CrossrankRerank``, a node postprocessor (like ``SentenceTransformerRerank`` or ``CohereRerank``).

It reranks in this process (``model=`` or a ready ``reranker=``) or with ``crossrank serve`` (``base_url=``)::

    from crossrank.integrations.llama_index import CrossrankRerank

    query_engine = index.as_query_engine(
        similarity_top_k=10, node_postprocessors=[CrossrankRerank(model="BAAI/bge-reranker-v2-m3", top_n=3)]
    )

Needs the ``llama-index`` extra: ``pip install 'crossrank[llama-index]'``.
"""

from __future__ import annotations

from typing import Any

from crossrank.async_reranker import AsyncReranker
from crossrank.config import RerankOptions
from crossrank.errors import InputError
from crossrank.integrations._source import DEFAULT_TIMEOUT, RerankSource, check_top_n, loaded_source, missing_extra
from crossrank.reranker import Reranker
from crossrank.types import RerankResult

try:
    from llama_index.core.bridge.pydantic import Field, PrivateAttr, SecretStr
    from llama_index.core.callbacks import CBEventType, EventPayload
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
except ImportError as exc:
    raise missing_extra(exc, "llama-index", "llama-index-core") from None

__all__ = ["CrossrankRerank"]


class CrossrankRerank(BaseNodePostprocessor):
    """Reranks retrieved nodes with a cross-encoder, keeping the best ``top_n``.

    The returned nodes are new ``NodeWithScore`` objects (the same nodes), best first, whose ``score`` is the
    ``relevance_score`` (0 to 1); the retriever's score is dropped, as ``SentenceTransformerRerank`` does.

    Args:
        model: hub id or local folder to run in this process (loaded when the postprocessor is built).
        reranker: a ready ``Reranker`` or started ``AsyncReranker`` instead (shared with other code).
        base_url: a ``crossrank serve`` to call instead, e.g. ``http://127.0.0.1:8000``.
        api_key: the server's key (``--api-key``).
        top_n: nodes to keep (``None``: all; LlamaIndex's rerankers keep 2 by default).
        timeout: seconds to wait for the server.
        options: long-document options and a decoder reranker's ``instruction`` (``RerankOptions`` or its fields by
            name: ``aggregate``, ``max_length``, ``instruction``, ...); over HTTP only ``aggregate``, ``instruction``
            and ``max_tokens_per_doc``, the rest being the server's settings.
        model_kwargs: ``Reranker`` keywords for ``model`` (``device``, ``dtype``, ``max_length``, ...).
    """

    model: str | None = Field(default=None, description="Hub id or local folder, run in process.")
    reranker: Reranker | AsyncReranker | None = Field(default=None, exclude=True)
    base_url: str | None = Field(default=None, description="crossrank serve's URL.")
    api_key: SecretStr | None = Field(default=None, exclude=True)
    top_n: int | None = Field(default=2, description="Nodes to keep, best first (None: all).")
    timeout: float = DEFAULT_TIMEOUT
    options: RerankOptions | dict[str, Any] | None = None
    model_kwargs: dict[str, Any] | None = None
    _source: RerankSource = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        check_top_n(self.top_n)
        self._source = loaded_source(self)

    @classmethod
    def class_name(cls) -> str:
        return "CrossrankRerank"

    def _texts(self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None) -> tuple[str, list[str]]:
        if query_bundle is None:
            raise InputError("CrossrankRerank needs the query", fix="pass query_str= or query_bundle=")
        # What the embedding model read (text with the metadata meant for it), as LlamaIndex's rerankers use.
        return query_bundle.query_str, [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]

    def _ranked(self, nodes: list[NodeWithScore], result: RerankResult) -> list[NodeWithScore]:
        return [NodeWithScore(node=nodes[r.index].node, score=r.relevance_score) for r in result.results]

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if not nodes:
            return []
        query, texts = self._texts(nodes, query_bundle)
        with self.callback_manager.event(CBEventType.RERANKING, payload=self._payload(nodes, query)) as event:
            ranked = self._ranked(nodes, self._source.rerank(query, texts, self.top_n))
            event.on_end(payload={EventPayload.NODES: ranked})
        return ranked

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if not nodes:
            return []
        query, texts = self._texts(nodes, query_bundle)
        with self.callback_manager.event(CBEventType.RERANKING, payload=self._payload(nodes, query)) as event:
            ranked = self._ranked(nodes, await self._source.arerank(query, texts, self.top_n))
            event.on_end(payload={EventPayload.NODES: ranked})
        return ranked

    def _payload(self, nodes: list[NodeWithScore], query: str) -> dict[str, Any]:
        name = self.model or self.base_url or "crossrank"
        return {
            EventPayload.NODES: nodes,
            EventPayload.MODEL_NAME: name,
            EventPayload.QUERY_STR: query,
            EventPayload.TOP_K: self.top_n,
        }
