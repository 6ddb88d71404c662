"""RedisScoreCache: the result cache in Redis, shared by every process and replica that points at it.

The only module that imports redis-py. Rows are JSON under ``prefix + sha256``, written with the
TTL in one pipelined round trip; lookups are one ``MGET``. Redis being slow or down never fails a
request: the error is counted (``stats.errors``), logged at most every 30 s, and the documents are
scored as misses.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence

import redis

from crossrank.engine.cache import CacheStats, Row

__all__ = ["RedisScoreCache"]

_log = logging.getLogger(__name__)
_WARN_EVERY = 30.0


class RedisScoreCache:
    """Rows in Redis at ``url`` (a connection pool, ``timeout`` seconds per call)."""

    kind = "redis"

    def __init__(self, url: str, *, ttl: int | None, prefix: str, timeout: float) -> None:
        self._client = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=30
        )
        self.url = url
        self.ttl = ttl
        self.prefix = prefix
        self.stats = CacheStats()
        self._lock = threading.Lock()
        self._warned = -_WARN_EVERY

    def _failed(self, exc: Exception, lookups: int) -> None:
        with self._lock:
            self.stats.errors += 1
            self.stats.misses += lookups
            now = time.monotonic()
            warn = now - self._warned >= _WARN_EVERY
            if warn:
                self._warned = now
        if warn:
            _log.warning("result cache at %s unavailable, computing instead: %s", self.url, exc)

    def get_many(self, keys: Sequence[str]) -> list[Row | None]:
        if not keys:
            return []
        try:
            values = self._client.mget([self.prefix + key for key in keys])
        except (redis.RedisError, OSError) as exc:
            self._failed(exc, len(keys))
            return [None] * len(keys)
        rows: list[Row | None] = [None if v is None else json.loads(v) for v in values]
        with self._lock:
            hits = sum(row is not None for row in rows)
            self.stats.hits += hits
            self.stats.misses += len(rows) - hits
        return rows

    def put_many(self, items: Sequence[tuple[str, Row]]) -> None:
        if not items:
            return
        try:
            pipe = self._client.pipeline(transaction=False)
            for key, row in items:
                pipe.set(self.prefix + key, json.dumps(row), ex=self.ttl)
            pipe.execute()
        except (redis.RedisError, OSError) as exc:
            self._failed(exc, 0)
