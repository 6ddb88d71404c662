"""Haystack: ``CrossrankRanker``, a ranker component (like ``TransformersSimilarityRanker``/``HuggingFaceTEIRanker``).

It reranks in this process (``model=``) or with ``crossrank serve`` (``base_url=``), and serialises as Haystack's
own rankers do (``to_dict``/``from_dict``, the API key as a ``Secret``)::

    from crossrank.integrations.haystack import CrossrankRanker

    ranker = CrossrankRanker(model="BAAI/bge-reranker-v2-m3", top_k=3)
    pipeline.add_component("ranker", ranker)
    pipeline.connect("retriever.documents", "ranker.documents")

Needs the ``haystack`` extra: ``pip install 'crossrank[haystack]'``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from crossrank.config import RerankOptions
from crossrank.errors import InputError
from crossrank.integrations._source import (
    DEFAULT_TIMEOUT,
    check_top_n,
    given_options,
    missing_extra,
    open_source,
    rerank_options,
)
from crossrank.types import RerankResult

try:
    from haystack import Document, component, default_from_dict, default_to_dict
    from haystack.utils import Secret, deserialize_secrets_inplace
except ImportError as exc:
    raise missing_extra(exc, "haystack", "haystack-ai") from None

__all__ = ["CrossrankRanker"]


@component
class CrossrankRanker:
    """Ranks documents by relevance to the query with a cross-encoder, keeping the best ``top_k``.

    Each returned document is a copy with ``score`` set to its ``relevance_score`` (0 to 1), best first.

    Args:
        model: hub id or local folder to run in this process (loaded by ``warm_up``, or the first ``run``).
        base_url: a ``crossrank serve`` to call instead, e.g. ``http://127.0.0.1:8000``.
        api_key: the server's key (``--api-key``); by default ``CROSSRANK_API_KEY`` when it is set.
        top_k: documents to keep (``None``: all); ``run(top_k=...)`` overrides it.
        timeout: seconds to wait for the server.
        options: long-document options and a decoder reranker's ``instruction``, ``RerankOptions`` fields by name
            (``{"aggregate": "mean"}``); over HTTP only ``aggregate``, ``instruction`` and ``max_tokens_per_doc``,
            the rest being the server's settings.
        model_kwargs: ``Reranker`` keywords for ``model`` (``device``, ``dtype``, ``max_length``, ...).
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        base_url: str | None = None,
        api_key: Secret | None = Secret.from_env_var("CROSSRANK_API_KEY", strict=False),  # noqa: B008
        top_k: int | None = 10,
        timeout: float = DEFAULT_TIMEOUT,
        options: dict[str, Any] | None = None,
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        check_top_n(top_k, "top_k")
        self.model = model
        self.base_url = base_url
        self.api_key = api_key
        self.top_k = top_k
        self.timeout = timeout
        # Kept by name so that to_dict writes plain JSON; checked here (an unknown name is a ConfigError).
        self.options = given_options(rerank_options(options))
        self.model_kwargs = model_kwargs
        # An in-process model needs no key: the default (CROSSRANK_API_KEY) is sent to servers only.
        key = api_key.resolve_value() if api_key is not None and base_url is not None else None
        self._source = open_source(
            model=model,
            base_url=base_url,
            api_key=key,
            timeout=timeout,
            options=RerankOptions(**self.options),
            model_kwargs=model_kwargs,
        )
        self._warm = False

    def warm_up(self) -> None:
        """Load the model (in process; nothing to do over HTTP). ``run`` calls it when it was not called."""
        if not self._warm:
            self._source.load()
            self._warm = True

    def to_dict(self) -> dict[str, Any]:
        """The component's configuration (the API key as its ``Secret``: an environment variable's name)."""
        return default_to_dict(
            self,
            model=self.model,
            base_url=self.base_url,
            api_key=self.api_key.to_dict() if self.api_key is not None else None,
            top_k=self.top_k,
            timeout=self.timeout,
            options=self.options or None,
            model_kwargs=self.model_kwargs,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CrossrankRanker:
        """The component ``to_dict`` describes."""
        deserialize_secrets_inplace(data["init_parameters"], keys=["api_key"])
        ranker: CrossrankRanker = default_from_dict(cls, data)
        return ranker

    @staticmethod
    def _ranked(documents: list[Document], result: RerankResult) -> dict[str, list[Document]]:
        return {"documents": [dataclasses.replace(documents[r.index], score=r.relevance_score) for r in result.results]}

    @component.output_types(documents=list[Document])
    def run(self, query: str, documents: list[Document], top_k: int | None = None) -> dict[str, list[Document]]:
        """The best ``top_k`` of ``documents`` for ``query``, best first, with their ``score``.

        Args:
            query: the question or search text.
            documents: the candidates (a document without ``content`` is ranked as empty text).
            top_k: documents to keep; ``None`` keeps the component's ``top_k``.
        """
        if not documents:
            return {"documents": []}
        top_k = self.top_k if top_k is None else check_top_n(top_k, "top_k", InputError)
        self.warm_up()
        result = self._source.rerank(query, [d.content or "" for d in documents], top_k)
        return self._ranked(documents, result)

    @component.output_types(documents=list[Document])
    async def run_async(
        self, query: str, documents: list[Document], top_k: int | None = None
    ) -> dict[str, list[Document]]:
        """``run``, awaited (``AsyncPipeline``)."""
        if not documents:
            return {"documents": []}
        top_k = self.top_k if top_k is None else check_top_n(top_k, "top_k", InputError)
        self.warm_up()
        result = await self._source.arerank(query, [d.content or "" for d in documents], top_k)
        return self._ranked(documents, result)
