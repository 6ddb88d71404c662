"""What the LangChain, LlamaIndex and Haystack classes share: "rerank these texts", in process or over HTTP.

``open_source`` gives a ``LocalSource`` (a ``Reranker`` or ``AsyncReranker`` in this process, given ready or
loaded from a model name or folder) or an ``HttpSource`` (``crossrank serve``'s ``/v2/rerank``). Both answer
with ``Reranker.rerank``'s ``RerankResult`` (index, score, relevance score), so a framework class is written
once for both.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import math
import threading
from collections.abc import Sequence
from typing import Any, Protocol

import httpx

from crossrank.async_reranker import AsyncReranker
from crossrank.config import RerankerOptions, RerankOptions
from crossrank.errors import (
    BackendError,
    ConfigError,
    CrossrankError,
    InferenceError,
    InputError,
    OverloadedError,
)
from crossrank.reranker import Reranker
from crossrank.types import RerankResult, ScoredDocument, Span

__all__ = [
    "DEFAULT_TIMEOUT",
    "HTTP_OPTIONS",
    "HttpSource",
    "LocalSource",
    "RerankSource",
    "check_top_n",
    "given_options",
    "loaded_source",
    "missing_extra",
    "open_source",
    "rerank_options",
]

# The RerankOptions fields /v2/rerank takes in its body; the others are the server's own settings.
HTTP_OPTIONS = frozenset({"aggregate", "instruction", "max_tokens_per_doc"})
DEFAULT_TIMEOUT = 60.0


def missing_extra(exc: ImportError, extra: str, package: str) -> ConfigError:
    """The error for importing an integration whose framework is not installed."""
    return ConfigError(
        f"crossrank.integrations.{extra.replace('-', '_')} needs {package}, and {exc.name} is not installed",
        fix=f"pip install 'crossrank[{extra}]'",
    )


def check_top_n(value: int | None, name: str = "top_n", error: type[CrossrankError] = ConfigError) -> int | None:
    """``value`` if it is ``None`` or a positive integer, else ``error`` naming ``name``."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise error(f"{name} must be a positive integer or None (all documents), got {value!r}")
    return value


def rerank_options(options: RerankOptions | dict[str, Any] | None) -> RerankOptions:
    """``options`` as ``RerankOptions`` (a dict by field name, as serialised configurations hold them)."""
    if options is None:
        return RerankOptions()
    if isinstance(options, RerankOptions):
        return options
    return RerankOptions.from_dict(options)


def given_options(options: RerankOptions) -> dict[str, Any]:
    """The fields of ``options`` that are set, by name (JSON-ready)."""
    return {k: v for k, v in dataclasses.asdict(options).items() if v is not None}


class RerankSource(Protocol):
    """Reranks texts for a query: the results best first, as ``Reranker.rerank`` gives them."""

    def load(self) -> None:
        """Load the model now (in process) rather than on the first call."""

    def rerank(self, query: str, documents: Sequence[str], top_n: int | None) -> RerankResult:
        """The ranking of ``documents`` for ``query`` (the best ``top_n``; all with ``None``)."""

    async def arerank(self, query: str, documents: Sequence[str], top_n: int | None) -> RerankResult:
        """``rerank``, awaited."""


class LocalSource:
    """Reranks in this process, with a ``Reranker`` or ``AsyncReranker`` given, or one loaded on first use.

    A ``Reranker`` is used by one thread at a time (its scorer is not thread-safe); awaited calls run it in a
    worker thread. An ``AsyncReranker`` (started by its owner) batches concurrent awaited calls together.
    """

    def __init__(
        self,
        reranker: Reranker | AsyncReranker | None = None,
        *,
        model: str | None = None,
        model_kwargs: dict[str, Any] | None = None,
        options: RerankOptions | None = None,
    ) -> None:
        if (reranker is None) == (model is None):
            raise ConfigError("give exactly one of reranker= (ready) and model= (a hub id or folder to load)")
        self._reranker = reranker
        self._model = model
        self._model_kwargs = dict(model_kwargs or {})
        self.options = options or RerankOptions()
        self._lock = threading.Lock()

    def load(self) -> None:
        """Load the model now (a no-op when it was given ready or is loaded)."""
        with self._lock:
            if self._reranker is None:
                # from_flat names an unknown keyword in a ConfigError (Reranker(**kwargs) would be a TypeError).
                flat = RerankerOptions.from_flat(model=self._model, **self._model_kwargs)
                self._reranker = Reranker.from_options(flat)

    def _loaded(self) -> Reranker | AsyncReranker:
        self.load()
        assert self._reranker is not None
        return self._reranker

    def _sync(self, reranker: Reranker, query: str, documents: Sequence[str], top_n: int | None) -> RerankResult:
        with self._lock:
            return reranker.rerank(query, documents, top_n=top_n, return_documents=False, options=self.options)

    def rerank(self, query: str, documents: Sequence[str], top_n: int | None) -> RerankResult:
        reranker = self._loaded()
        if isinstance(reranker, Reranker):
            return self._sync(reranker, query, documents, top_n)
        # The AsyncReranker's queue answers on whichever loop submitted: a private loop in a private thread works
        # whether or not this thread runs one.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, self._queued(reranker, query, documents, top_n)).result()

    async def arerank(self, query: str, documents: Sequence[str], top_n: int | None) -> RerankResult:
        reranker = await asyncio.to_thread(self._loaded)
        if isinstance(reranker, Reranker):
            return await asyncio.to_thread(self._sync, reranker, query, documents, top_n)
        return await self._queued(reranker, query, documents, top_n)

    async def _queued(
        self, reranker: AsyncReranker, query: str, documents: Sequence[str], top_n: int | None
    ) -> RerankResult:
        return await reranker.rerank(query, documents, top_n=top_n, return_documents=False, options=self.options)


def _logit(p: float) -> float:
    # /v2/rerank answers sigmoid(logit) in float64; its inverse gives the logit back (±inf where it rounded to 0 or 1).
    if p <= 0.0:
        return -math.inf
    if p >= 1.0:
        return math.inf
    return math.log(p) - math.log1p(-p)


class HttpSource:
    """Reranks with ``crossrank serve`` over HTTP (its ``/v2/rerank``), with ``httpx``.

    Errors are crossrank's: the server's 4xx message as ``InputError`` (413 and 422 too), a refused key as
    ``ConfigError``, 429/503 as ``OverloadedError``, an unreachable server, a timeout or a 5xx as ``BackendError``.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        options: RerankOptions | None = None,
    ) -> None:
        self.options = options or RerankOptions()
        unsent = sorted(set(given_options(self.options)) - HTTP_OPTIONS)
        if unsent:
            raise ConfigError(
                f"over HTTP, a request can set only {', '.join(sorted(HTTP_OPTIONS))}; not {', '.join(unsent)}",
                fix="set those on the server (crossrank serve --help: --chunk-tokens, --max-length, ...)",
            )
        if timeout <= 0:
            raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._headers = {} if not api_key else {"Authorization": f"Bearer {api_key}"}
        self._client: httpx.Client | None = None

    def load(self) -> None:
        """Nothing to load: the server holds the model."""

    def _body(self, query: str, documents: Sequence[str], top_n: int | None) -> dict[str, Any]:
        if not isinstance(query, str):
            raise InputError(f"query must be a string, got {type(query).__name__}")
        if isinstance(documents, str) or not all(isinstance(d, str) for d in documents):
            raise InputError("documents must be a list of strings", fix="wrap a single document in a list")
        check_top_n(top_n, error=InputError)
        return {"query": query, "documents": list(documents), "top_n": top_n, **given_options(self.options)}

    def rerank(self, query: str, documents: Sequence[str], top_n: int | None) -> RerankResult:
        body = self._body(query, documents, top_n)
        if self._client is None:
            self._client = httpx.Client(timeout=self.timeout)
        try:
            response = self._client.post(f"{self.base_url}/v2/rerank", json=body, headers=self._headers)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        return self._result(response)

    async def arerank(self, query: str, documents: Sequence[str], top_n: int | None) -> RerankResult:
        body = self._body(query, documents, top_n)
        # A client per call: an AsyncClient belongs to the loop it was first used on.
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            try:
                response = await client.post(f"{self.base_url}/v2/rerank", json=body, headers=self._headers)
            except httpx.HTTPError as exc:
                raise self._unreachable(exc) from None
        return self._result(response)

    def _unreachable(self, exc: httpx.HTTPError) -> BackendError:
        if isinstance(exc, httpx.TimeoutException):
            return BackendError(
                f"the crossrank server at {self.base_url} did not answer within {self.timeout} s",
                fix="pass a larger timeout=, or send fewer documents per call",
            )
        return BackendError(
            f"cannot reach the crossrank server at {self.base_url}: {exc}",
            fix="start it (crossrank serve --host 127.0.0.1 --port 8000) or correct base_url",
        )

    def _result(self, response: httpx.Response) -> RerankResult:
        if response.status_code != 200:
            raise self._error(response)
        try:
            results = response.json()["results"]
            return RerankResult(results=[_scored(item) for item in results])
        except (ValueError, KeyError, TypeError) as exc:
            raise InferenceError(
                f"{self.base_url}/v2/rerank answered something other than a rerank result ({exc!r})",
                fix="point base_url at a crossrank server (or another Cohere v2 rerank API)",
            ) from None

    def _error(self, response: httpx.Response) -> CrossrankError:
        status = response.status_code
        try:
            message = str(response.json().get("message") or response.text)
        except ValueError:
            message = response.text
        said = f"the crossrank server answered {status}: {message}"
        if status in (401, 403):
            return ConfigError(said, fix="pass the server's key as api_key= (crossrank serve --api-key)")
        if status in (429, 503):
            retry = response.headers.get("retry-after", "1")
            return OverloadedError(said, retry_after=int(retry) if retry.isdigit() else 1, fix="retry later")
        if 400 <= status < 500:
            # The server's message names the field and the limit (and the fix, when it knows one).
            return InputError(said)
        return BackendError(said, fix="see the server's log for this request")


def _scored(item: dict[str, Any]) -> ScoredDocument:
    span = item.get("span")
    return ScoredDocument(
        index=int(item["index"]),
        score=_logit(float(item["relevance_score"])),
        relevance_score=float(item["relevance_score"]),
        span=Span(int(span["start"]), int(span["end"])) if span else None,
        chunks=int(item.get("chunks", 1)),
    )


def open_source(
    *,
    model: str | None = None,
    reranker: Reranker | AsyncReranker | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    options: RerankOptions | dict[str, Any] | None = None,
    model_kwargs: dict[str, Any] | None = None,
) -> LocalSource | HttpSource:
    """The source of exactly one of ``model`` (loaded in process), ``reranker`` (ready) and ``base_url`` (HTTP).

    Args:
        model: hub id or local folder, loaded on first use (or ``load()``) with ``model_kwargs``.
        reranker: a ``Reranker`` or started ``AsyncReranker`` to use as it is.
        base_url: where ``crossrank serve`` listens, e.g. ``http://127.0.0.1:8000``.
        api_key: the server's key (``--api-key``), sent as a Bearer token.
        timeout: seconds to wait for the server.
        options: long-document options and a decoder reranker's ``instruction``, for every call (``RerankOptions``
            or its fields by name); over HTTP, only ``aggregate``, ``instruction`` and ``max_tokens_per_doc``.
        model_kwargs: ``Reranker`` keywords for ``model`` (``device``, ``dtype``, ``max_length``, ...).
    """
    given = [
        name
        for name, value in (("model", model), ("reranker", reranker), ("base_url", base_url))
        if value is not None and value != ""
    ]
    if len(given) != 1:
        raise ConfigError(
            f"give exactly one of model=, reranker= and base_url= (got {', '.join(given) or 'none'})",
            fix="model='BAAI/bge-reranker-v2-m3' runs it in this process; base_url='http://127.0.0.1:8000' uses "
            "crossrank serve",
        )
    call_options = rerank_options(options)
    if base_url is not None:
        if model_kwargs:
            raise ConfigError("model_kwargs apply to a model loaded in process, not to base_url=")
        return HttpSource(base_url, api_key=api_key, timeout=timeout, options=call_options)
    if api_key:
        raise ConfigError("api_key= goes with base_url=; an in-process model needs none")
    return LocalSource(reranker, model=model, model_kwargs=model_kwargs, options=call_options)


def loaded_source(fields: Any) -> LocalSource | HttpSource:
    """The loaded source of a framework class whose fields are ``open_source``'s arguments (``api_key`` held as a
    pydantic ``SecretStr`` or None), as LangChain's and LlamaIndex's classes hold them."""
    key = fields.api_key
    source = open_source(
        model=fields.model,
        reranker=fields.reranker,
        base_url=fields.base_url,
        api_key=key.get_secret_value() if key is not None else None,
        timeout=fields.timeout,
        options=fields.options,
        model_kwargs=fields.model_kwargs,
    )
    source.load()
    return source
