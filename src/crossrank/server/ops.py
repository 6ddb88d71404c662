"""Operational routes: ``/health``, ``/ready``, ``/info``, ``/metrics``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from crossrank._version import __version__
from crossrank.backends.cpu_mode import cpu_mode_of
from crossrank.engine.cache import CachedScorer
from crossrank.server.errors import documented_errors
from crossrank.server.schemas import StatusResponse, TeiErrorResponse
from crossrank.server.service import RerankService, get_service
from crossrank.server.tei import info_fields

__all__ = ["router"]

router = APIRouter(tags=["operations"])
Service = Annotated[RerankService, Depends(get_service)]


@router.get(
    "/health",
    response_model=None,
    responses={
        200: {"model": StatusResponse, "description": "The process serves (the model may still be loading)."},
        503: {"model": TeiErrorResponse, "description": "The model failed to load or the scoring worker stopped."},
    },
)
async def health(service: Service) -> JSONResponse:
    """200 while the process can serve (also while the model loads); 503 once loading failed or the worker died."""
    state = service.state
    worker_dead = state.status == "ready" and state.reranker is not None and not state.reranker.batcher.alive
    if state.status == "failed" or worker_dead:
        # /health answers without a key: why loading failed (paths, exception text) is for the server log only.
        reason = "the model failed to load" if state.status == "failed" else "the scoring worker stopped"
        return JSONResponse({"error": reason, "error_type": "unhealthy"}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get(
    "/ready",
    response_model=None,
    responses={
        200: {"model": StatusResponse, "description": "The model is loaded and warmed up."},
        503: {"model": StatusResponse, "description": "The model is loading (or failed to load)."},
        **documented_errors("/ready", 401),
    },
)
async def ready(service: Service) -> JSONResponse:
    """200 once the model is loaded and warmed up; 503 before (and after a failed load)."""
    status = service.state.status
    if status == "ready":
        return JSONResponse({"status": "ready"})
    return JSONResponse({"status": status}, status_code=503, headers={"Retry-After": "5"})


@router.get("/info", responses=documented_errors("/info", 401))
async def info(service: Service) -> dict[str, Any]:
    """The model, how it runs, and the server's limits."""
    o = service.options
    batcher = service.state.reranker.batcher if service.state.reranker is not None else None
    body: dict[str, Any] = {
        "version": __version__,
        "model_id": o.model_name,
        "status": service.state.status,
        "limits": {
            "max_documents": o.max_documents,
            "max_document_chars": o.max_document_chars,
            "max_query_chars": o.max_query_chars,
            "max_body_bytes": o.max_body_bytes,
            "max_queue_pairs": o.queue.max_queue_pairs,
            # In tokens of planned work (windows x tokens); null: no bound (the cap is measured once the model loads).
            "max_queue_tokens": batcher.max_queue_tokens if batcher else o.queue.max_queue_tokens,
            "max_request_tokens": batcher.max_request_tokens if batcher else o.queue.max_request_tokens,
            "max_wait_ms": o.queue.max_wait_ms,
            "max_batch_requests": o.queue.max_batch_requests,
        },
        "auth": bool(o.api_keys),
        "slow_ms": o.slow_ms,
    }
    body.update(info_fields(service))  # TEI's fields, which TEI clients (Dify, RAGFlow) read
    if service.state.reranker is not None:
        rr = service.state.reranker.reranker
        backend = rr.scorer.backend
        body.update(
            revision=rr.revision,
            backend=backend.name,
            device=backend.device,
            dtype=backend.dtype,
            # dtype="auto" on CPU: the measured choice and each mode's speed ÷ float32's (null: nothing measured).
            cpu_precision=cpu_mode_of(backend),
            max_length=rr.truncation.max_length,
            model_max_length=rr.model_max_length,
            max_batch_tokens=rr.batching.max_batch_tokens,
            max_batch_size=rr.batching.max_batch_size,
            min_pass_tokens=rr.batching.min_pass_tokens,
            cache=type(rr.scorer.cache).__name__ if isinstance(rr.scorer, CachedScorer) else None,
            # How the model is scored (crossrank.families); a request's `instruction` counts only where
            # takes_instruction; one without runs with default_instruction (--instruction, else the family's).
            family=rr.family.name,
            takes_instruction=rr.family.takes_instruction,
            default_instruction=rr.instruction,
            # What the scores depend on (the model's files, backend, precision, the default options): replicas
            # with equal fingerprints give equal scores.
            fingerprint=rr.fingerprint().digest,
            scoring=rr.fingerprint().values,
        )
    return body


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text format."},
        **documented_errors("/metrics", 401),
    },
)
async def metrics(request: Request) -> Response:
    """Prometheus text exposition."""
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
