"""The Celery integration with a real redis-server broker and real `crossrank worker` processes (slow), and the
configuration it derives (fast)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import subprocess_env
from crossrank import Reranker
from redis_server import RedisServer, running_redis

celery = pytest.importorskip("celery", reason="the celery extra is in the dev extra")

from crossrank.integrations.celery import TASK_NAME, create_celery, visibility_timeout  # noqa: E402
from crossrank.settings import Settings  # noqa: E402

QUERY = "what is panda?"
DOCS = ["hi", "The giant panda is a bear native to China.", "Paris is the capital of France."]


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


# Seconds after which the broker hands out again a task that a worker took but never acknowledged.
VISIBILITY_TIMEOUT = 5


def _settings(redis: RedisServer) -> Settings:
    return Settings(
        celery_broker_url=redis.url(0),
        celery_result_backend=redis.url(1),
        celery_visibility_timeout=VISIBILITY_TIMEOUT,
    )


class Worker:
    def __init__(self, redis: RedisServer, model: Path) -> None:
        self.log = tempfile.NamedTemporaryFile(prefix="crossrank-worker-", suffix=".log", delete=False)  # noqa: SIM115
        env = subprocess_env(
            CROSSRANK_CELERY_VISIBILITY_TIMEOUT=str(VISIBILITY_TIMEOUT), CROSSRANK_DEVICE="cpu", PYTHONUNBUFFERED="1"
        )
        args = ["--broker", redis.url(0), "--backend", redis.url(1), "-m", str(model)]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "crossrank", "worker", *args],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its pool processes die with it
        )

    def text(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # warm shutdown: the main process acks what finished
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def worker(redis: RedisServer, english_model_dir: Path) -> Iterator[Worker]:
    w = Worker(redis, english_model_dir)
    yield w
    w.stop()


def _received(worker: Worker) -> set[str]:
    return set(re.findall(r"Task crossrank\.rerank\[([0-9a-f-]+)\] received", worker.text()))


def _expected(reranker: Reranker, documents: list[str]) -> list[tuple[int, float]]:
    return [(r.index, r.score) for r in reranker.rerank(QUERY, documents).results]


@pytest.mark.slow
def test_worker_answers_with_the_librarys_scores(
    redis: RedisServer, worker: Worker, english_reranker: Reranker
) -> None:
    app = create_celery(_settings(redis))
    pending = [
        app.send_task(TASK_NAME, kwargs={"query": QUERY, "documents": DOCS}),
        app.send_task(TASK_NAME, kwargs={"query": QUERY, "documents": DOCS, "top_n": 1, "return_documents": False}),
    ]
    full, top = (p.get(timeout=180) for p in pending)
    assert [(r["index"], pytest.approx(r["score"], abs=1e-5)) for r in full["results"]] == _expected(
        english_reranker, DOCS
    )
    assert full["results"][0]["document"] == DOCS[1]
    assert 0 <= full["results"][0]["relevance_score"] <= 1
    assert full["usage"]["total_tokens"] > 0
    assert [r["index"] for r in top["results"]] == [1]
    assert "document" not in top["results"][0]
    bad = app.send_task(TASK_NAME, kwargs={"query": QUERY, "documents": "not a list"})
    with pytest.raises(Exception, match="documents must be a list"):
        bad.get(timeout=60)
    assert worker.text().count("loading") == 1  # one model per worker process, loaded once


@pytest.mark.slow
def test_a_killed_worker_loses_no_accepted_task(
    redis: RedisServer, english_model_dir: Path, english_reranker: Reranker
) -> None:
    app = create_celery(_settings(redis))
    # Seconds of work (40 documents of 130-450 tokens), so it dies mid-task: it is killed within about 0.05 s of being
    # received.
    heavy = [f"{DOCS[i % len(DOCS)]} {i} " * 40 for i in range(40)]
    light = app.send_task(TASK_NAME, kwargs={"query": QUERY, "documents": DOCS})
    held = app.send_task(TASK_NAME, kwargs={"query": QUERY, "documents": heavy})
    first = Worker(redis, english_model_dir)
    try:
        light.get(timeout=180)  # the worker is up; the heavy task is next
        deadline = time.monotonic() + 60
        while held.id not in _received(first) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert held.id in _received(first)
        first.kill()  # SIGKILL mid-task: the task was never acknowledged
    finally:
        first.stop()
    assert held.state != "SUCCESS"
    # Kombu's Redis transport hands out unacknowledged tasks older than the visibility timeout when a worker's event
    # loop starts, and after that only every ~100 s (10 s interval x throttle 10): the second worker starts once the
    # held task is past its timeout, so the sweep at its start finds it. It must be the worker's own timeout that
    # lets the task go: with kombu's default (an hour) nothing is handed out and the result never comes.
    time.sleep(VISIBILITY_TIMEOUT + 1)
    second = Worker(redis, english_model_dir)
    try:
        result = held.get(timeout=240)
    finally:
        second.stop()
    assert held.id in _received(second)  # handed out again and finished by the second worker
    expected = _expected(english_reranker, heavy)
    assert [(r["index"], pytest.approx(r["score"], abs=1e-5)) for r in result["results"]] == expected


def test_the_visibility_timeout_follows_the_time_limit_unless_set(caplog: pytest.LogCaptureFixture) -> None:
    """A dead worker's task comes back after the visibility timeout: kombu's hour by default, against tasks that
    may run 5 minutes, before it was derived from the time limit."""
    urls = {"celery_broker_url": "redis://127.0.0.1:1/0", "celery_result_backend": "redis://127.0.0.1:1/1"}
    default = create_celery(Settings(**urls))
    assert default.conf.task_time_limit == 330
    options = default.conf.broker_transport_options
    assert options["visibility_timeout"] == 420  # hard limit 330 s + longest retry countdown 60 s + 30 s
    assert (options["unacked_restore_interval"], options["unacked_restore_throttle"]) == (10, 1)
    assert default.conf.result_backend_transport_options["visibility_timeout"] == 420
    short = create_celery(Settings(**urls, celery_time_limit=20))
    assert short.conf.broker_transport_options["visibility_timeout"] == 140
    assert visibility_timeout(Settings(**urls, celery_visibility_timeout=900)) == 900
    assert not caplog.records
    assert visibility_timeout(Settings(**urls, celery_visibility_timeout=100)) == 100
    assert "can be handed to a second worker" in caplog.text


@pytest.mark.slow
def test_a_dead_workers_task_moves_to_a_running_worker_within_the_stated_delay(
    redis: RedisServer, english_model_dir: Path
) -> None:
    """The README's promise: with another worker already running, the task comes back within the visibility
    timeout plus the 10 s sweep (kombu's default sweep, every ~100 s, missed it)."""
    app = create_celery(_settings(redis))
    heavy = [f"{DOCS[i % len(DOCS)]} {i} " * 40 for i in range(40)]
    first, second = Worker(redis, english_model_dir), Worker(redis, english_model_dir)
    try:
        warm = [app.send_task(TASK_NAME, kwargs={"query": QUERY, "documents": DOCS}) for _ in range(4)]
        for task in warm:
            task.get(timeout=180)  # both workers are up
        held = app.send_task(TASK_NAME, kwargs={"query": QUERY, "documents": heavy})
        deadline = time.monotonic() + 60
        while not {held.id} & (_received(first) | _received(second)) and time.monotonic() < deadline:
            time.sleep(0.05)
        victim, survivor = (first, second) if held.id in _received(first) else (second, first)
        assert held.id in _received(victim)
        victim.kill()
        killed = time.monotonic()
        held.get(timeout=VISIBILITY_TIMEOUT + 10 + 30)  # the delay the README states, and time to score
        assert held.id in _received(survivor)
        assert time.monotonic() - killed <= VISIBILITY_TIMEOUT + 10 + 30
    finally:
        first.stop()
        second.stop()
