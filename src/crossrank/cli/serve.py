"""`crossrank serve`: the HTTP rerank service (Cohere, Jina, TEI and vLLM APIs) on uvicorn."""

from __future__ import annotations

import logging
import sys
from typing import Annotated, Any

import typer
import uvicorn

from crossrank.cli._common import (
    BackendOption,
    DeviceOption,
    DtypeOption,
    MaxLengthOption,
    ModelOption,
    QuantizeOption,
    exit_code,
    open_reranker,
    reporting_errors,
    settings,
)
from crossrank.cli._render import print_error
from crossrank.errors import CrossrankError

__all__ = ["serve"]


def _configure_logging(level: str) -> None:
    # The access logger's messages are already JSON objects: print them bare, one per line.
    access = logging.getLogger("crossrank.server.access")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access.addHandler(handler)
    access.propagate = False
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def serve(
    model: ModelOption = None,
    host: Annotated[str | None, typer.Option(help="Address to bind [env: CROSSRANK_HOST, default 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [env: CROSSRANK_PORT, default 8000].")] = None,
    api_key: Annotated[
        list[str] | None,
        typer.Option(help="Accepted Bearer key; repeat for several [env: CROSSRANK_API_KEY, comma-separated]."),
    ] = None,
    device: DeviceOption = None,
    dtype: DtypeOption = None,
    backend: BackendOption = None,
    quantize: QuantizeOption = None,
    max_length: MaxLengthOption = None,
    max_batch_tokens: Annotated[
        int | None,
        typer.Option(help="Padded tokens per forward pass [8192 on CPU; on a GPU, what free memory holds, <= 32768]."),
    ] = None,
    max_batch_size: Annotated[
        int | None, typer.Option(help="Pairs per forward pass [64 on CPU; on a GPU, token budget / 64, >= 64].")
    ] = None,
    max_wait_ms: Annotated[float | None, typer.Option(help="Longest wait for a batch to fill [5].")] = None,
    max_queue_pairs: Annotated[int | None, typer.Option(help="Queued pairs before 429 [8192].")] = None,
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
    cache_size: Annotated[int | None, typer.Option(help="In-process result cache entries [0: off].")] = None,
    cache_url: Annotated[
        str | None,
        typer.Option(help="redis://host:port/db: a result cache shared by replicas [env: CROSSRANK_CACHE_URL]."),
    ] = None,
    cache_ttl: Annotated[int | None, typer.Option(help="Seconds a Redis cache entry lives.")] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Serve reranking over HTTP: POST /v2/rerank (Cohere v2), /v1/rerank (Cohere v1, Jina), /rerank (TEI, vLLM)."""
    from crossrank.server import ServerOptions, create_app

    with reporting_errors():
        flags: dict[str, Any] = {
            "host": host,
            "port": port,
            "max_wait_ms": max_wait_ms,
            "max_queue_pairs": max_queue_pairs,
            "max_batch_requests": max_batch_requests,
            "max_documents": max_documents,
            "max_document_chars": max_document_chars,
            "max_query_chars": max_query_chars,
            "max_body_bytes": max_body_bytes,
            "slow_ms": slow_ms,
            "cors_origins": cors_origins,
            "served_model_name": served_model_name,
            "graceful_timeout": graceful_timeout,
            "model": model,
        }
        config = settings().model_copy(update={k: v for k, v in flags.items() if v is not None})
        options = ServerOptions.from_settings(config, api_keys=tuple(api_key or ()))
        model_flags = {
            "model": model,
            "device": device,
            "dtype": dtype,
            "backend": backend,
            "quantize": quantize,
            "max_length": max_length,
            "max_batch_tokens": max_batch_tokens,
            "max_batch_size": max_batch_size,
            "cache_size": cache_size,
            "cache_url": cache_url,
            "cache_ttl": cache_ttl,
        }
        _configure_logging(log_level)
        failure: list[CrossrankError] = []
        server: uvicorn.Server | None = None

        def fatal(error: CrossrankError) -> None:
            failure.append(error)
            if server is not None:
                server.should_exit = True

        app = create_app(options, lambda: open_reranker(**model_flags), on_fatal=fatal)
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
