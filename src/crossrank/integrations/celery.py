"""Celery integration: the ready ``crossrank.rerank`` task and the app ``crossrank worker`` runs.

A worker process loads the model once, when it starts, and answers ``crossrank.rerank`` tasks with
the library's result shape (``RerankResult`` as a dict). Tasks are acknowledged only after they
finish (``acks_late``) and re-queued when a worker dies mid-task, so a restart loses nothing the
broker accepted; only transient failures (the backend failed, the queue was full) are retried.

With Redis as the broker, a task whose worker died is handed to another worker once it has been out for the
visibility timeout, which is derived from the task's time limit (``visibility_timeout``): 420 s with the default
300 s limit, found by a sweep every 10 s. It must exceed the longest a task can be held by a live worker, or a slow
task would be handed to a second worker while the first still runs it.

Calling it from an application, which needs only Celery and the broker's URL::

    from crossrank.integrations.celery import create_celery

    app = create_celery()                      # broker/backend from CROSSRANK_CELERY_BROKER_URL, ...
    result = app.send_task("crossrank.rerank", kwargs={"query": "what is panda?", "documents": docs, "top_n": 3})
    ranked = result.get(timeout=60)            # {"results": [{"index", "score", "relevance_score", ...}], ...}
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from celery import Celery, Task, signals

from crossrank.config import RerankerOptions, RerankOptions
from crossrank.errors import BackendError, OverloadedError
from crossrank.reranker import Reranker
from crossrank.settings import Settings

__all__ = ["TASK_NAME", "create_celery", "result_to_dict", "visibility_timeout"]

TASK_NAME = "crossrank.rerank"
# The hard time limit (the task is killed) is this many seconds past the soft one (SoftTimeLimitExceeded).
_HARD_LIMIT_GRACE = 30
# The longest countdown of a retry: a worker holds the retried task, unacknowledged, for that long before running it.
_RETRY_BACKOFF_MAX = 60
# Seconds between the Redis transport's sweeps for tasks out longer than the visibility timeout.
_RESTORE_INTERVAL = 10

_log = logging.getLogger(__name__)

# The model of this worker process, loaded once by `worker_process_init` (or by the first task).
_state: dict[str, Any] = {}


def result_to_dict(result: Any) -> dict[str, Any]:
    """A ``RerankResult`` as JSON-ready data (what the task returns)."""
    data: dict[str, Any] = dataclasses.asdict(result)
    data.pop("timing", None)
    for item in data["results"]:
        if item.get("document") is None:
            item.pop("document", None)
    return data


def _reranker(app: Celery) -> Reranker:
    if "reranker" not in _state:
        options: RerankerOptions = app.conf.crossrank_reranker_options
        _log.info("loading %s", options.model.name_or_path)
        _state["reranker"] = Reranker.from_options(options)
    reranker: Reranker = _state["reranker"]
    return reranker


def visibility_timeout(settings: Settings) -> int:
    """Seconds after which the Redis broker hands a task out again when its worker has not acknowledged it.

    Unless set (``CROSSRANK_CELERY_VISIBILITY_TIMEOUT``), just above the longest a live worker may hold a task: the
    hard time limit (the soft limit + 30 s) plus the longest retry countdown (60 s) plus 30 s, so 420 s for the
    default 300 s limit. Kombu's own default (an hour) would leave a dead worker's task waiting that long.
    """
    given = settings.celery_visibility_timeout
    derived = settings.celery_time_limit + _HARD_LIMIT_GRACE + _RETRY_BACKOFF_MAX + 30
    if given is None:
        return derived
    if given < derived:
        _log.warning(
            "the Celery visibility timeout (%d s) is shorter than a task may run (%d s with retries): a slow task "
            "can be handed to a second worker while the first still runs it",
            given,
            derived - 30,
        )
    return int(given)


def create_celery(settings: Settings | None = None, **reranker_overrides: Any) -> Celery:
    """A Celery app with the ``crossrank.rerank`` task, configured from ``CROSSRANK_*`` settings.

    Args:
        settings: broker, result backend, time limits and the model's options (default: from the environment).
        reranker_overrides: ``Reranker`` arguments that win over the settings (``model=...``), checked as the
            ``CROSSRANK_*`` variables are.
    """
    settings = (settings or Settings()).with_flags(**reranker_overrides)
    app = Celery("crossrank", broker=settings.celery_broker_url, backend=settings.celery_result_backend)
    visibility = visibility_timeout(settings)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=settings.celery_time_limit,
        task_time_limit=settings.celery_time_limit + _HARD_LIMIT_GRACE,
        # A task whose worker died is handed out again once it has been out this long (Redis broker), found by a
        # sweep every _RESTORE_INTERVAL s (kombu's default sweeps every 10th tick only: ~100 s).
        broker_transport_options={
            "visibility_timeout": visibility,
            "unacked_restore_interval": _RESTORE_INTERVAL,
            "unacked_restore_throttle": 1,
        },
        result_backend_transport_options={"visibility_timeout": visibility},
        result_expires=settings.celery_result_expires,
        broker_connection_retry_on_startup=True,
        crossrank_reranker_options=settings.reranker_options(),
    )

    @app.task(  # type: ignore[untyped-decorator]
        name=TASK_NAME,
        bind=True,
        autoretry_for=(BackendError, OverloadedError),
        retry_backoff=True,
        retry_backoff_max=_RETRY_BACKOFF_MAX,
        max_retries=3,
    )
    def rerank(
        self: Task,
        query: str,
        documents: list[str],
        top_n: int | None = None,
        return_documents: bool = True,
        max_length: int | None = None,
        min_score: float | None = None,
        options: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Rerank ``documents`` for ``query``; the answer is ``RerankResult`` as a dict.

        ``options`` are ``RerankOptions`` fields by name (``{"aggregate": "mean", "truncate": false}``).
        """
        result = _reranker(self.app).rerank(
            query,
            documents,
            top_n=top_n,
            return_documents=return_documents,
            min_score=min_score,
            options=RerankOptions.from_dict({**(options or {}), "max_length": max_length}),
        )
        return result_to_dict(result)

    @signals.worker_process_init.connect(weak=False)  # type: ignore[untyped-decorator]
    def _load(**_: Any) -> None:
        # Each pool process holds its own model, loaded before it takes a task.
        _state.clear()
        _reranker(app)

    return app
