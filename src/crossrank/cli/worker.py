"""`crossrank worker`: a Celery worker that holds the model and answers `crossrank.rerank` tasks."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from crossrank.cli._common import BATCH_FLAGS, MODEL_FLAGS, SCORING_FLAGS, Flags, reporting_errors, settings, with_flags
from crossrank.errors import ConfigError

__all__ = ["worker"]


# --backend is the Celery result backend here (CROSSRANK_BACKEND still picks the runtime).
@with_flags(tuple(name for name in MODEL_FLAGS if name != "backend"), SCORING_FLAGS, BATCH_FLAGS)
def worker(
    broker: Annotated[
        str | None,
        typer.Option(help="Broker URL [env: CROSSRANK_CELERY_BROKER_URL, default redis://127.0.0.1:6379/0]."),
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(
            help="Result backend URL [env: CROSSRANK_CELERY_RESULT_BACKEND, default redis://127.0.0.1:6379/1]."
        ),
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Worker processes, each with its own copy of the model.")] = 1,
    queue: Annotated[str, typer.Option(help="Queue to consume.")] = "celery",
    log_level: Annotated[
        Literal["debug", "info", "warning", "error"], typer.Option(help="debug, info, warning or error.")
    ] = "info",
    *,
    flags: Flags,
) -> None:
    """Run a Celery worker for the `crossrank.rerank` task (see crossrank.integrations.celery).

    Needs the celery extra: pip install 'crossrank[celery]'.
    """
    with reporting_errors():
        try:
            from crossrank.integrations.celery import create_celery
        except ImportError as exc:
            if (exc.name or "").split(".")[0] not in {"celery", "kombu", "redis"}:
                raise
            raise ConfigError(
                f"crossrank worker needs the celery extra, and {exc.name} is not installed",
                fix="pip install 'crossrank[celery]'",
            ) from None
        app = create_celery(settings({**flags, "celery_broker_url": broker, "celery_result_backend": backend}))
        app.worker_main(
            [
                "worker",
                f"--loglevel={log_level.upper()}",
                f"--concurrency={concurrency}",
                "--pool=prefork",
                f"--queues={queue}",
                "--without-gossip",
                "--without-mingle",
            ]
        )
