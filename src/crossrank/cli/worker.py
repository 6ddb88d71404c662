"""`crossrank worker`: a Celery worker that holds the model and answers `crossrank.rerank` tasks."""

from __future__ import annotations

from typing import Annotated

import typer

from crossrank.cli._common import DeviceOption, DtypeOption, MaxLengthOption, ModelOption, reporting_errors, settings

__all__ = ["worker"]


def worker(
    model: ModelOption = None,
    device: DeviceOption = None,
    dtype: DtypeOption = None,
    max_length: MaxLengthOption = None,
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
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run a Celery worker for the `crossrank.rerank` task (see crossrank.integrations.celery)."""
    from crossrank.integrations.celery import create_celery

    with reporting_errors():
        overrides = {"celery_broker_url": broker, "celery_result_backend": backend}
        config = settings().model_copy(update={k: v for k, v in overrides.items() if v is not None})
        app = create_celery(config, model=model, device=device, dtype=dtype, max_length=max_length)
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
