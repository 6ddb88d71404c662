"""create_app: the FastAPI application; the model loads in the background while /health answers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from starlette.middleware.cors import CORSMiddleware

from crossrank._version import __version__
from crossrank.async_reranker import AsyncReranker
from crossrank.engine.cache import CachedScorer
from crossrank.errors import CrossrankError, ModelError
from crossrank.reranker import Reranker
from crossrank.server import cohere, infinity, models, ops, tei, ui
from crossrank.server.body import document_bodies
from crossrank.server.errors import install_error_handlers
from crossrank.server.metrics import Metrics
from crossrank.server.middleware import (
    AccessMiddleware,
    AuthMiddleware,
    BodyLimitMiddleware,
    BodyTimeoutMiddleware,
    document_auth,
)
from crossrank.server.options import ServerOptions
from crossrank.server.service import RerankService, ServerState

__all__ = ["create_app"]

_log = logging.getLogger(__name__)

_WARM_UP = ("warm-up query", ["a warm-up document", "another, somewhat longer, warm-up document"])


def _load(load: Callable[[], Reranker]) -> Reranker:
    reranker = load()
    # The first forward pass pays for lazy initialisation (kernels, allocator); do it before /ready.
    reranker.rerank(*_WARM_UP, use_cache=False)
    return reranker


async def _start(app: FastAPI, load: Callable[[], Reranker], on_fatal: Callable[[CrossrankError], None]) -> None:
    state: ServerState = app.state.service.state
    metrics: Metrics = app.state.metrics
    options: ServerOptions = app.state.service.options
    try:
        reranker = await asyncio.to_thread(_load, load)
    except Exception as exc:
        error = exc if isinstance(exc, CrossrankError) else ModelError(f"{type(exc).__name__}: {exc}")
        _log.error("the model failed to load: %s", error, exc_info=not isinstance(exc, CrossrankError))
        state.status, state.error = "failed", error
        on_fatal(error)
        return
    async_reranker = AsyncReranker(reranker, options.queue, on_batch=metrics.observe_batch)
    await asyncio.to_thread(async_reranker.start)  # it may calibrate the request cap: a second of model work
    metrics.watch_queue(async_reranker.batcher)
    if isinstance(reranker.scorer, CachedScorer):
        metrics.watch_cache(reranker.scorer.cache.stats, reranker.scorer.cache.kind)
    state.reranker, state.status = async_reranker, "ready"
    metrics.ready.set(1)
    _log.info(
        "ready: %s on %s (%s), load %.1f s",
        options.model_name,
        reranker.device,
        reranker.dtype,
        reranker.load_seconds,
    )


def create_app(
    options: ServerOptions,
    load: Callable[[], Reranker],
    *,
    on_fatal: Callable[[CrossrankError], None] | None = None,
) -> FastAPI:
    """The rerank service as an ASGI app.

    Args:
        options: limits, auth, queue and alerting.
        load: builds the Reranker; runs in a thread at start-up, followed by a warm-up pass.
        on_fatal: called when loading fails (``crossrank serve`` stops the server with exit code 3).
    """
    metrics = Metrics()
    state = ServerState()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        starting = asyncio.create_task(_start(app, load, on_fatal or (lambda error: None)))
        try:
            yield
        finally:
            # Uvicorn has finished the in-flight requests by now; score what is queued, then release.
            if not starting.done():
                starting.cancel()
            if state.reranker is not None:
                metrics.ready.set(0)
                await asyncio.to_thread(state.reranker.close)

    # FastAPIOffline: /docs and /redoc load Swagger UI and ReDoc from the installed package, not from a CDN.
    app = FastAPIOffline(
        title="crossrank",
        version=__version__,
        description="Cross-encoder reranking with Cohere-, Jina-, TEI-, vLLM- and Infinity-compatible APIs.",
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    app.state.service = RerankService(state, options, metrics)
    install_error_handlers(app)
    for router in (cohere.router, tei.router, infinity.router, models.router, ops.router):
        app.include_router(router)
    if options.ui:
        app.include_router(ui.router)
    document_bodies(app, {**cohere.BODIES, **tei.BODIES, **infinity.BODIES}, options.max_documents)
    # Added innermost first. Auth before the body limit, so no one without a key makes the server
    # read a body; CORS outside auth, so browsers' preflight requests (which carry no key) pass.
    app.add_middleware(BodyLimitMiddleware, limit=options.max_body_bytes)
    app.add_middleware(BodyTimeoutMiddleware, timeout=options.body_timeout)
    app.add_middleware(AuthMiddleware, keys=options.api_keys)
    if options.api_keys:
        document_auth(app)
    if options.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(options.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(AccessMiddleware, metrics=metrics, slow_ms=options.slow_ms)
    return app
