"""One table from error to HTTP status, and error bodies in each API dialect's shape.

text-embeddings-inference answers ``{"error": ..., "error_type": ...}``; Cohere (and Jina, which
shares ``/v1/rerank``) answer ``{"message": ...}``. Which shape a response takes follows its path,
so a client always gets the shape its SDK parses, and never a stack trace.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from crossrank.errors import (
    BackendError,
    ConfigError,
    CrossrankError,
    InputError,
    InputTooLongError,
    LimitExceededError,
    ModelError,
    OverloadedError,
)
from crossrank.server.schemas import CohereErrorResponse, TeiErrorResponse, utf8_safe

__all__ = [
    "RERANK_ERRORS",
    "ClientClosedError",
    "EmptyTextsError",
    "NotReadyError",
    "TooManyItemsError",
    "documented_errors",
    "error_response",
    "install_error_handlers",
    "request_details",
]

_log = logging.getLogger(__name__)


class NotReadyError(CrossrankError):
    """The model is still loading (or failed to load); the server cannot score yet."""


class EmptyTextsError(InputError):
    """TEI answers an empty ``texts`` list with 400 ``{"error_type": "empty"}``."""


class TooManyItemsError(LimitExceededError):
    """A request list has more items than its limit; it was read no further, so how many more is not known."""

    def __init__(self, field: str, limit: int, *, unit: str, fix: str) -> None:
        super().__init__(field, limit + 1, limit, unit=unit, fix=fix)
        self.message = f"{field}: more than the limit of {limit} {unit}"


class ClientClosedError(CrossrankError):
    """The client disconnected before its answer was ready; its queued work was dropped."""


# The first matching class wins: (class, HTTP status, TEI error_type).
_STATUS: tuple[tuple[type[CrossrankError], int, str], ...] = (
    (LimitExceededError, 413, "payload_limit"),
    (InputTooLongError, 413, "validation"),
    (EmptyTextsError, 400, "empty"),
    (InputError, 422, "validation"),
    (ConfigError, 422, "validation"),
    (OverloadedError, 429, "overloaded"),
    (NotReadyError, 503, "unhealthy"),
    (ClientClosedError, 499, "dropped"),
    (BackendError, 503, "backend"),
    (ModelError, 503, "backend"),
    (CrossrankError, 500, "backend"),
)

_COHERE_PATHS = ("/v1/", "/v2/")

# What each error status means, for the OpenAPI document (/docs); every status a route can answer is listed there.
_MEANING = {
    400: "The body is not valid JSON (TEI: or `texts` is empty).",
    401: "The API key is missing or wrong (servers started with --api-key).",
    408: "The body paused longer than --body-timeout between two parts; the connection is closed.",
    413: "A size limit was passed: documents, characters or body bytes; the message names the field and the limit.",
    422: "A field is missing or has the wrong type or value; the message names the field.",
    429: "The queue is full; retry after Retry-After seconds.",
    503: "The model is not ready (loading or failed), or the backend failed on this request's batch.",
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}},
    429: {"Retry-After": {"description": "seconds, from recent throughput", "schema": {"type": "integer"}}},
}

# The error statuses every rerank route can answer.
RERANK_ERRORS = (400, 401, 408, 413, 422, 429, 503)


def request_details(scope: Scope) -> dict[str, Any]:
    """The per-request dict the access log prints (with its ``request_id``); routes add documents, tokens, timings."""
    state: dict[str, Any] = scope.setdefault("state", {})
    details: dict[str, Any] = state.setdefault("crossrank", {})
    return details


def error_response(
    path: str,
    status: int,
    message: str,
    error_type: str,
    headers: dict[str, str] | None = None,
    *,
    request_id: str | None = None,
) -> JSONResponse:
    """A JSON error in the shape the dialect of ``path`` uses (with ``request_id``, the log line to look for)."""
    cohere = path.startswith(_COHERE_PATHS)
    message = utf8_safe(message)  # it may quote the request
    body: dict[str, Any] = {"message": message} if cohere else {"error": message, "error_type": error_type}
    if request_id is not None:
        body["request_id"] = request_id
    return JSONResponse(body, status_code=status, headers=headers)


def documented_errors(path: str, *statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the error statuses of the route at ``path``, in its dialect's error body."""
    model = CohereErrorResponse if path.startswith(_COHERE_PATHS) else TeiErrorResponse
    documented: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        documented[status] = {"model": model, "description": _MEANING[status]}
        if status in _HEADERS:
            documented[status]["headers"] = _HEADERS[status]
    return documented


async def _crossrank_error(request: Request, error: CrossrankError) -> JSONResponse:
    status, error_type = next((s, t) for cls, s, t in _STATUS if isinstance(error, cls))
    headers = None
    if isinstance(error, OverloadedError):
        headers = {"Retry-After": str(error.retry_after)}
    elif isinstance(error, NotReadyError):
        headers = {"Retry-After": "5"}
    message, request_id = str(error), None
    if status >= 500 and not isinstance(error, NotReadyError):
        # The runtime's own text (paths, tensor shapes, library internals) stays in the log, under the request id.
        request_id = request_details(request.scope).get("request_id")
        _log.warning("%s %s failed (request id %s): %s", request.method, request.url.path, request_id, error)
        message = f"scoring failed on the server ({type(error).__name__}); see its log, request id {request_id}"
    return error_response(request.url.path, status, message, error_type, headers, request_id=request_id)


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) if parts else "body"


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        detail = next(e for e in errors if e.get("type") == "json_invalid")
        where = detail.get("ctx", {}).get("error", "")
        return error_response(
            request.url.path, 400, f"the request body is not valid JSON: {where}".strip(), "validation"
        )
    problems = "; ".join(f"{_field(tuple(e['loc']))}: {e['msg']}" for e in errors[:10])
    return error_response(request.url.path, 422, problems, "validation")


_HTTP_ERROR_TYPES = {404: "not_found", 405: "method_not_allowed", 413: "payload_limit"}


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    error_type = _HTTP_ERROR_TYPES.get(exc.status_code, "validation")
    return error_response(
        request.url.path, exc.status_code, str(exc.detail), error_type, dict(exc.headers or {}) or None
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    request_id = request_details(request.scope).get("request_id")
    _log.exception("%s %s: unexpected error (request id %s)", request.method, request.url.path, request_id)
    message = f"internal error ({type(exc).__name__}); see the server log, request id {request_id}"
    return error_response(request.url.path, 500, message, "backend", request_id=request_id)


def install_error_handlers(app: FastAPI) -> None:
    """Route every error through the table above."""
    # The handlers are coroutines because Starlette runs plain functions in its worker-thread pool: under overload
    # every 429 would hop to a thread, and the pool would keep up to 40 idle threads afterwards.
    app.add_exception_handler(CrossrankError, _crossrank_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)
