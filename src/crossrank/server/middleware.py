"""ASGI middleware: access log and request metrics, API-key auth, request body limit and body timeout.

Plain ASGI (no ``BaseHTTPMiddleware``) so nothing buffers responses or breaks client-disconnect
detection, and so a rejected request is answered before its body is read.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
import uuid
from typing import Any

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crossrank.server.errors import error_response, request_details
from crossrank.server.metrics import Metrics
from crossrank.server.ui import UI_ROUTES

__all__ = [
    "AccessMiddleware",
    "AuthMiddleware",
    "BodyLimitMiddleware",
    "BodyTimeoutMiddleware",
    "document_auth",
    "request_details",
]

_access_log = logging.getLogger("crossrank.server.access")

# Routes whose latency is alerted on (--slow-ms); everything else is operational.
RERANK_ROUTES = frozenset({"/rerank", "/v1/rerank", "/v2/rerank", "/infinity/rerank"})
_KNOWN_ROUTES = RERANK_ROUTES | UI_ROUTES | {"/health", "/ready", "/info", "/metrics", "/docs", "/openapi.json"}
_KNOWN_ROUTES |= {"/tokenize", "/decode", "/v1/models", "/models", "/infinity/models", "/infinity/health"}
# Routes that answer without an API key: the health checks (TEI's and Infinity's say only whether the process
# serves); the playground's files hold no data (the calls it makes need the key).
_OPEN_ROUTES = frozenset({"/health", "/infinity/health"}) | UI_ROUTES


class AccessMiddleware:
    """One JSON log line and the request metrics per HTTP request; a warning when a rerank is slow."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, slow_ms: float) -> None:
        self.app = app
        self.metrics = metrics
        self.slow_ms = slow_ms

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        details = request_details(scope)
        details["request_id"] = uuid.uuid4().hex
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"].append((b"x-request-id", details["request_id"].encode()))
            await send(message)

        rerank = scope["path"] in RERANK_ROUTES
        if rerank:
            self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_status)
        finally:
            if rerank:
                self.metrics.in_flight.dec()
            self._record(scope, status, time.perf_counter() - started, details)

    def _record(self, scope: Scope, status: int, seconds: float, details: dict[str, Any]) -> None:
        path = scope["path"]
        route = path if path in _KNOWN_ROUTES else "other"
        self.metrics.requests.labels(route=route, status=str(status)).inc()
        self.metrics.request_seconds.labels(route=route).observe(seconds)
        latency_ms = round(seconds * 1000, 3)
        line = {
            "event": "request",
            "method": scope["method"],
            "path": route,
            "status": status,
            "latency_ms": latency_ms,
            **details,
        }
        slow = route in RERANK_ROUTES and status < 400 and latency_ms > self.slow_ms
        if slow:
            self.metrics.slow.labels(route=route).inc()
            line["slow"] = True
            line["slow_ms"] = self.slow_ms
            _access_log.warning(json.dumps(line, ensure_ascii=False))
        elif route != "/metrics" or status >= 400:
            _access_log.info(json.dumps(line, ensure_ascii=False))


class AuthMiddleware:
    """``Authorization: Bearer <key>`` on every route but ``/health``, ``/infinity/health`` and the ``/ui`` page's
    files, compared in constant time."""

    def __init__(self, app: ASGIApp, *, keys: tuple[str, ...]) -> None:
        self.app = app
        self.keys = tuple(key.encode() for key in keys)

    def _allowed(self, header: bytes) -> bool:
        scheme, _, token = header.partition(b" ")
        token = token.strip()
        # Compare against every key, whatever matched, so timing does not tell which key is close.
        matched = False
        for key in self.keys:
            matched |= secrets.compare_digest(token, key)
        return scheme.lower() == b"bearer" and matched

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys or scope["path"] in _OPEN_ROUTES:
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization", b"")
        if self._allowed(header):
            await self.app(scope, receive, send)
            return
        message = "missing API key" if not header else "invalid API key"
        response = error_response(
            scope["path"],
            401,
            f"{message}: send the header 'Authorization: Bearer <key>'",
            "auth",
            headers={"WWW-Authenticate": "Bearer"},
        )
        await response(scope, receive, send)


def document_auth(app: FastAPI) -> None:
    """Declare the Bearer key in ``app``'s OpenAPI document: required on every route that ``AuthMiddleware`` guards."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()  # FastAPI keeps it in app.openapi_schema: amended once, here
        schema.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "a key given to --api-key"}
        }
        for path, operations in schema["paths"].items():
            if path not in _OPEN_ROUTES:
                for operation in operations.values():
                    operation["security"] = [{"bearer": []}]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


class _BodyTooSlow(HTTPException):
    def __init__(self, timeout: float) -> None:
        super().__init__(
            408,
            f"no part of the request body came for {timeout:g} s (--body-timeout); send the body without pauses",
            headers={"Connection": "close"},
        )


class BodyTimeoutMiddleware:
    """Answer 408 and close the connection when the body stalls for ``timeout`` seconds between two chunks.

    Only while the body comes in: waiting for the answer (the route listens for a disconnect) is not bounded.
    """

    def __init__(self, app: ASGIApp, *, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        reading = True

        async def timed_receive() -> Message:
            nonlocal reading
            if not reading:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.timeout)
            except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
                raise _BodyTooSlow(self.timeout) from None
            reading = message["type"] == "http.request" and message.get("more_body", False)
            return message

        await self.app(scope, timed_receive, send)


class _BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is more than the limit of {limit} bytes (--max-body-bytes)")


class BodyLimitMiddleware:
    """Refuse bodies over ``limit`` bytes: at once from Content-Length, else while they stream in."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            error = _BodyTooLarge(self.limit)
            await error_response(scope["path"], 413, error.detail, "payload_limit")(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _BodyTooLarge(self.limit)
            return message

        await self.app(scope, counting_receive, send)
