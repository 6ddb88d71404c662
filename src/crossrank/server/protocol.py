"""The HTTP protocol `crossrank serve` runs: uvicorn's own, with a deadline for each request's headers.

Uvicorn bounds a connection that is idle *after* a response (``timeout_keep_alive``), but not one that
opens and sends nothing, nor headers that trickle in a byte at a time: both held a connection (and
a slot of ``limit_concurrency``) for as long as the client liked. Here a connection whose next request's
headers are not complete ``header_timeout`` seconds after it opened, or after that request's first
byte, is closed. Bodies are bounded by ``BodyTimeoutMiddleware`` (seconds between chunks); the time a
request then spends being scored is not bounded here.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol

__all__ = ["timed_http_protocol"]


class _HeaderDeadline(asyncio.Protocol):
    """Mixed in before uvicorn's protocol class (httptools or h11), whose attributes it reads."""

    header_timeout = 10.0
    # Set by uvicorn's protocol classes.
    cycle: Any
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_request():
            self._disarm()  # the headers are complete: from here the body timeout and the app take over
        elif self._deadline is None:
            self._arm()  # the first bytes of the next request on a kept-alive connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _in_request(self) -> bool:
        cycle = getattr(self, "cycle", None)
        return cycle is not None and not cycle.response_complete

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.header_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if not self._in_request() and not self.transport.is_closing():
            self.transport.close()


def timed_http_protocol(header_timeout: float) -> type[asyncio.Protocol]:
    """Uvicorn's HTTP protocol (``http="auto"``: httptools when installed, else h11) with a header deadline."""
    return type("TimedHTTPProtocol", (_HeaderDeadline, AutoHTTPProtocol), {"header_timeout": header_timeout})
