"""RedisScoreCache: the result cache in Redis, shared by every process and replica that points at it.

The only module that imports redis-py. Rows are JSON under ``prefix + sha256``, written with the
TTL in one pipelined round trip; lookups are one ``MGET``. Redis being slow or down never fails a
request: the error is counted (``stats.errors``), logged at most every 30 s, and the documents are
scored as misses. An entry that is not a row crossrank wrote (another program's value, a damaged one) is
a miss too: counted as an error and deleted. The URL is logged without its credentials.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Sequence

import redis

from crossrank.engine.cache import CacheStats, Row

__all__ = ["RedisScoreCache", "redact_url"]

_log = logging.getLogger(__name__)
_WARN_EVERY = 30.0
_PASSWORD_PARAMETER = re.compile(r"(?i)([?&](?:password|username)=)[^&]*")


def redact_url(url: str) -> str:
    """``url`` with its password (and user name) replaced by ``***``: what may be logged.

    >>> redact_url("redis://user:secret@cache:6379/0")
    'redis://***@cache:6379/0'
    """
    url = _PASSWORD_PARAMETER.sub(r"\1***", url)  # redis://host?password=...
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    if not sep or "@" not in authority:
        return url
    return f"{scheme}://***@{authority.rpartition('@')[2]}{slash}{path}"


def _decode(value: bytes | str) -> Row | None:
    """A row as crossrank writes it (a JSON list), or ``None`` for anything else."""
    try:
        row = json.loads(value)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested past the parser's depth
        return None
    return row if isinstance(row, list) else None


class RedisScoreCache:
    """Rows in Redis at ``url`` (a connection pool, ``timeout`` seconds per call)."""

    kind = "redis"

    def __init__(self, url: str, *, ttl: int | None, prefix: str, timeout: float) -> None:
        self._client = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=30
        )
        self.url = redact_url(url)  # only ever logged
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
        rows: list[Row | None] = [None if v is None else _decode(v) for v in values]
        bad = [self.prefix + k for k, v, row in zip(keys, values, rows, strict=True) if v is not None and row is None]
        with self._lock:
            hits = sum(row is not None for row in rows)
            self.stats.hits += hits
            self.stats.misses += len(rows) - hits
            self.stats.errors += len(bad)
        if bad:
            self._drop(bad)
        return rows

    def _drop(self, keys: list[str]) -> None:
        """Delete entries that are not rows crossrank wrote (another program's, or damaged): each is a miss."""
        _log.warning("result cache at %s: %d entries are not crossrank rows; deleted", self.url, len(keys))
        try:
            self._client.delete(*keys)
        except (redis.RedisError, OSError) as exc:
            self._failed(exc, 0)

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
