"""`crossrank serve`: the HTTP rerank service (Cohere, Jina, TEI and vLLM APIs) on uvicorn."""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import sys
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from crossrank.cli._common import (
    BATCH_FLAGS,
    CACHE_FLAGS,
    MODEL_FLAGS,
    SCORING_FLAGS,
    AddressInUseError,
    Flags,
    exit_code,
    reporting_errors,
    settings,
    with_flags,
)
from crossrank.cli._render import print_error
from crossrank.errors import ConfigError, CrossrankError
from crossrank.reranker import Reranker

if TYPE_CHECKING:
    import uvicorn

__all__ = ["serve"]

_log = logging.getLogger("crossrank.serve")

LogLevel = Literal["debug", "info", "warning", "error"]
# The server extra's packages: a core install (no extras) has none of them.
_SERVER_EXTRA = {"uvicorn", "fastapi", "starlette", "prometheus_client"}


def _require_server_extra() -> None:
    """Import the server's packages now, or say which extra brings them (the rest of the CLI works without)."""
    try:
        import uvicorn  # noqa: F401

        import crossrank.server  # noqa: F401
    except ImportError as exc:
        if (exc.name or "").split(".")[0] not in _SERVER_EXTRA:
            raise
        raise ConfigError(
            f"crossrank serve needs the server extra, and {exc.name} is not installed",
            fix="pip install 'crossrank[server]'",
        ) from None


def _listen(host: str, port: int) -> socket.socket:
    """Bind the server's socket here, so a taken address is a typed error, not uvicorn's startup failure."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(f"cannot serve on {host}: {exc}", fix="pass --host with an address of this machine") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise AddressInUseError(
                f"{host}:{port} is already in use by another process",
                fix=f"stop the process on port {port} (e.g. `ss -ltnp 'sport = :{port}'` shows it), "
                "or pass another --port (CROSSRANK_PORT)",
            ) from None
        raise AddressInUseError(
            f"cannot listen on {host}:{port}: {exc.strerror}",
            fix="pass --host with an address of this machine and a --port you may use (>= 1024 without root)",
        ) from None
    sock.set_inheritable(True)
    return sock


def _loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def _configure_logging(level: str) -> None:
    # The access logger's messages are already JSON objects: print them bare, one per line.
    access = logging.getLogger("crossrank.server.access")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access.addHandler(handler)
    access.propagate = False
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@with_flags(MODEL_FLAGS, SCORING_FLAGS, BATCH_FLAGS, CACHE_FLAGS, ("ui",))
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind [env: CROSSRANK_HOST, default 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [env: CROSSRANK_PORT, default 8000].")] = None,
    api_key: Annotated[
        list[str] | None,
        typer.Option(help="Accepted Bearer key; repeat for several [env: CROSSRANK_API_KEY, comma-separated]."),
    ] = None,
    max_wait_ms: Annotated[float | None, typer.Option(help="Longest wait for a batch to fill [5].")] = None,
    max_queue_pairs: Annotated[
        int | None, typer.Option(help="Queued windows (query-chunk pairs) before 429 [8192].")
    ] = None,
    max_queue_tokens: Annotated[
        int | None, typer.Option(help="Queued tokens of planned work before 429 [8 x the request cap].")
    ] = None,
    max_request_tokens: Annotated[
        int | None,
        typer.Option(help="Tokens of planned work per request before 413 [measured tokens/s at start x 5 s]."),
    ] = None,
    max_batch_requests: Annotated[
        int | None, typer.Option(help="Requests scored together at most (1: no cross-request batching).")
    ] = None,
    max_documents: Annotated[int | None, typer.Option(help="Documents per request [1000].")] = None,
    max_document_chars: Annotated[int | None, typer.Option(help="Characters per document [200000].")] = None,
    max_query_chars: Annotated[int | None, typer.Option(help="Characters of the query [20000].")] = None,
    max_body_bytes: Annotated[int | None, typer.Option(help="Request body bytes [20000000].")] = None,
    slow_ms: Annotated[float | None, typer.Option(help="Warn on rerank requests slower than this [200].")] = None,
    cors_origins: Annotated[str | None, typer.Option(help="CORS origins, comma-separated (off by default).")] = None,
    served_model_name: Annotated[str | None, typer.Option(help="Model name reported in responses.")] = None,
    graceful_timeout: Annotated[float | None, typer.Option(help="Seconds to finish requests on SIGTERM [30].")] = None,
    max_connections: Annotated[
        int | None, typer.Option(help="Open connections or requests at once; 503 beyond [1000].")
    ] = None,
    keep_alive_timeout: Annotated[
        int | None, typer.Option(help="Seconds an idle kept-alive connection stays open [5].")
    ] = None,
    header_timeout: Annotated[
        float | None, typer.Option(help="Seconds to receive a request's headers; the connection closes after [10].")
    ] = None,
    body_timeout: Annotated[
        float | None, typer.Option(help="Seconds a request body may pause between chunks; 408 after [30].")
    ] = None,
    log_level: Annotated[LogLevel, typer.Option(help="debug, info, warning or error.")] = "info",
    *,
    flags: Flags,
) -> None:
    """Serve reranking over HTTP: POST /v2/rerank (Cohere v2), /v1/rerank (Cohere v1, Jina), /rerank (TEI, vLLM).

    Needs the server extra: pip install 'crossrank[server]'.

    Exit codes: 0 stopped, 2 bad option (or the server extra missing), 3 model not found or unusable,
    4 runtime failure, 5 the address is in use or cannot be bound.
    """
    with reporting_errors():
        _require_server_extra()
        import uvicorn

        from crossrank.server import ServerOptions, create_app
        from crossrank.server.protocol import timed_http_protocol

        door: dict[str, Any] = {
            "host": host,
            "port": port,
            "max_wait_ms": max_wait_ms,
            "max_queue_pairs": max_queue_pairs,
            "max_queue_tokens": max_queue_tokens,
            "max_request_tokens": max_request_tokens,
            "max_batch_requests": max_batch_requests,
            "max_documents": max_documents,
            "max_document_chars": max_document_chars,
            "max_query_chars": max_query_chars,
            "max_body_bytes": max_body_bytes,
            "slow_ms": slow_ms,
            "cors_origins": cors_origins,
            "served_model_name": served_model_name,
            "graceful_timeout": graceful_timeout,
            "max_connections": max_connections,
            "keep_alive_timeout": keep_alive_timeout,
            "header_timeout": header_timeout,
            "body_timeout": body_timeout,
        }
        config = settings({**flags, **door})
        options = ServerOptions.from_settings(config, api_keys=tuple(api_key or ()))
        reranker_options = config.reranker_options()
        sock = _listen(config.host, config.port)
        _configure_logging(log_level)
        if not options.api_keys and not _loopback(config.host):
            _log.warning(
                "serving on %s without an API key: anyone who can reach it can use the model; pass --api-key "
                "(CROSSRANK_API_KEY), and put a reverse proxy with TLS in front before exposing it to the internet",
                config.host,
            )
        failure: list[CrossrankError] = []
        server: uvicorn.Server | None = None

        def fatal(error: CrossrankError) -> None:
            failure.append(error)
            if server is not None:
                server.should_exit = True

        app = create_app(options, lambda: Reranker.from_options(reranker_options), on_fatal=fatal)
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=config.host,
                port=config.port,
                log_level=log_level,
                access_log=False,
                timeout_graceful_shutdown=int(config.graceful_timeout),
                # Connection limits (README, "Limits"): idle, slow headers (the protocol) and slow bodies (the app).
                limit_concurrency=config.max_connections,
                timeout_keep_alive=config.keep_alive_timeout,
                http=timed_http_protocol(config.header_timeout),
            )
        )
        try:
            server.run(sockets=[sock])
        finally:
            sock.close()
        if failure:
            print_error(failure[0])
            raise typer.Exit(exit_code(failure[0]))
        if not server.started:
            raise typer.Exit(4)
