"""LangChain: ``CrossrankRerank`` (a document compressor, like ``CohereRerank``) and ``CrossrankCrossEncoder``.

Both rerank in this process (``model=`` or a ready ``reranker=``) or with ``crossrank serve`` (``base_url=``)::

    from crossrank.integrations.langchain import CrossrankRerank

    compressor = CrossrankRerank(model="BAAI/bge-reranker-v2-m3", top_n=3)
    best = compressor.compress_documents(documents, "what is panda?")   # metadata["relevance_score"]

Needs the ``langchain`` extra: ``pip install 'crossrank[langchain]'``.
"""

from __future__ import annotations

from collections.abc import Sequence
from copy import deepcopy
from typing import Any

from crossrank.async_reranker import AsyncReranker
from crossrank.config import RerankOptions
from crossrank.integrations._source import (
    DEFAULT_TIMEOUT,
    RerankSource,
    check_top_n,
    loaded_source,
    missing_extra,
    open_source,
)
from crossrank.reranker import Reranker
from crossrank.types import RerankResult

try:
    from langchain_core.callbacks import Callbacks
    from langchain_core.cross_encoders import BaseCrossEncoder
    from langchain_core.documents import BaseDocumentCompressor, Document
    from pydantic import ConfigDict, PrivateAttr, SecretStr
except ImportError as exc:
    raise missing_extra(exc, "langchain", "langchain-core") from None

__all__ = ["CrossrankCrossEncoder", "CrossrankRerank"]


def _documents(result: RerankResult, documents: Sequence[Document]) -> list[Document]:
    ranked = []
    for item in result.results:
        document = documents[item.index]
        # A copy, as CohereRerank makes: the caller's documents keep their metadata.
        metadata = {**deepcopy(document.metadata), "relevance_score": item.relevance_score}
        ranked.append(Document(page_content=document.page_content, metadata=metadata, id=document.id))
    return ranked


class CrossrankRerank(BaseDocumentCompressor):
    """Reranks retrieved documents with a cross-encoder, keeping the best ``top_n``.

    Each returned document is a copy with ``metadata["relevance_score"]`` (0 to 1), best first.

    Args:
        model: hub id or local folder to run in this process (loaded when the compressor is built).
        reranker: a ready ``Reranker`` or started ``AsyncReranker`` instead (shared with other code).
        base_url: a ``crossrank serve`` to call instead, e.g. ``http://127.0.0.1:8000``.
        api_key: the server's key (``--api-key``).
        top_n: documents to keep (``None``: all).
        timeout: seconds to wait for the server.
        options: long-document options and a decoder reranker's ``instruction`` (``RerankOptions`` or its fields by
            name: ``aggregate``, ``max_length``, ``instruction``, ...); over HTTP only ``aggregate``, ``instruction``
            and ``max_tokens_per_doc``, the rest being the server's settings.
        model_kwargs: ``Reranker`` keywords for ``model`` (``device``, ``dtype``, ``max_length``, ...).
    """

    model: str | None = None
    reranker: Reranker | AsyncReranker | None = None
    base_url: str | None = None
    api_key: SecretStr | None = None
    top_n: int | None = 3
    timeout: float = DEFAULT_TIMEOUT
    options: RerankOptions | dict[str, Any] | None = None
    model_kwargs: dict[str, Any] | None = None

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")
    _source: RerankSource = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        check_top_n(self.top_n)
        self._source = loaded_source(self)

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """The best ``top_n`` of ``documents`` for ``query``, best first, each with its ``relevance_score``."""
        if not documents:
            return []
        result = self._source.rerank(query, [d.page_content for d in documents], self.top_n)
        return _documents(result, documents)

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """``compress_documents``, awaited (an ``AsyncReranker`` batches concurrent calls; HTTP is async)."""
        if not documents:
            return []
        result = await self._source.arerank(query, [d.page_content for d in documents], self.top_n)
        return _documents(result, documents)


class CrossrankCrossEncoder(BaseCrossEncoder):
    """A LangChain cross-encoder for ``CrossEncoderReranker`` (``langchain_classic.retrievers.document_compressors``).

    ``score`` gives each pair's ``relevance_score`` (0 to 1, the sigmoid of the model's logit), in the pairs' order.
    Takes the same arguments as ``CrossrankRerank`` except ``top_n`` (``CrossEncoderReranker`` has its own).
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        reranker: Reranker | AsyncReranker | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        options: RerankOptions | dict[str, Any] | None = None,
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self._source = open_source(
            model=model,
            reranker=reranker,
            base_url=base_url,
            api_key=api_key,
            timeout=timeout,
            options=options,
            model_kwargs=model_kwargs,
        )
        self._source.load()

    def score(self, text_pairs: list[tuple[str, str]]) -> list[float]:
        """``relevance_score`` of each (query, document) pair, in order; one call per distinct query."""
        by_query: dict[str, list[int]] = {}
        for i, (query, _) in enumerate(text_pairs):
            by_query.setdefault(query, []).append(i)
        scores = [0.0] * len(text_pairs)
        for query, where in by_query.items():
            result = self._source.rerank(query, [text_pairs[i][1] for i in where], None)
            for item in result.results:
                scores[where[item.index]] = item.relevance_score
        return scores
