"""`crossrank serve`: the HTTP rerank service (Cohere, Jina, TEI and vLLM APIs) on uvicorn."""

from __future__ import annotations

import logging
import sys
from typing import Annotated, Any

import typer
import uvicorn

from crossrank.cli._common import (
    BATCH_FLAGS,
    CACHE_FLAGS,
    MODEL_FLAGS,
    SCORING_FLAGS,
    Flags,
    exit_code,
    reporting_errors,
    settings,
    with_flags,
)
from crossrank.cli._render import print_error
from crossrank.errors import CrossrankError
from crossrank.reranker import Reranker

__all__ = ["serve"]


def _configure_logging(level: str) -> None:
    # The access logger's messages are already JSON objects: print them bare, one per line.
    access = logging.getLogger("crossrank.server.access")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access.addHandler(handler)
    access.propagate = False
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@with_flags(MODEL_FLAGS, SCORING_FLAGS, BATCH_FLAGS, CACHE_FLAGS)
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
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    *,
    flags: Flags,
) -> None:
    """Serve reranking over HTTP: POST /v2/rerank (Cohere v2), /v1/rerank (Cohere v1, Jina), /rerank (TEI, vLLM)."""
    from crossrank.server import ServerOptions, create_app

    with reporting_errors():
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
        }
        config = settings({**flags, **door})
        options = ServerOptions.from_settings(config, api_keys=tuple(api_key or ()))
        reranker_options = config.reranker_options()
        _configure_logging(log_level)
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
            )
        )
        server.run()
        if failure:
            print_error(failure[0])
            raise typer.Exit(exit_code(failure[0]))
        if not server.started:
            raise typer.Exit(4)
