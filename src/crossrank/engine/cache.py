"""Result cache: (model, options, query, document) to its score, so repeated questions skip the model.

``CachedScorer`` sits in front of the ``Scorer``: for each request it looks up every document's
key, sends only the misses to the model (a partial hit scores just the missing pairs), stores the
new rows and assembles the answer in the request's order. A row holds everything the scorer
returns per document (the raw logit, and where present the best window's span and window count),
so a hit is exactly what the model would have said. The key is the sha256 of the request's
``Fingerprint`` (the model's files, backend and precision, and every score-changing option of the
request) and the two texts. Caches are ``LRUScoreCache`` (in process, bounded in entries and bytes) or
``RedisScoreCache`` (shared by replicas; ``crossrank.engine.redis_cache``). A cache that fails
(Redis down) counts the error and the request is computed: a cache never fails a request.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from crossrank.backends.base import Backend
from crossrank.config import BatchingOptions, CacheOptions
from crossrank.engine.scorer import RequestScorer, ScoredRequest, ScoreRequest
from crossrank.engine.tokenizer import PairTokenizer
from crossrank.errors import BackendUnavailableError, ConfigError
from crossrank.fingerprint import Fingerprint

__all__ = ["CacheStats", "CachedScorer", "LRUScoreCache", "ScoreCache", "cache_key", "open_cache"]

_log = logging.getLogger(__name__)

# One cached row: the per-document values of a ScoredRequest (logit, span, windows...), as plain numbers.
Row = list[Any]


@dataclass(slots=True)
class CacheStats:
    """Counters since start: lookups answered, lookups missed, and cache failures (each degraded to computing)."""

    hits: int = 0
    misses: int = 0
    errors: int = 0


class ScoreCache(Protocol):
    """Where rows are kept. Implementations are thread-safe and never raise for a lookup or a store."""

    kind: str  # its name in metrics: "memory" or "redis"
    stats: CacheStats

    def get_many(self, keys: Sequence[str]) -> list[Row | None]:
        """The row of each key, ``None`` where absent."""
        ...

    def put_many(self, items: Sequence[tuple[str, Row]]) -> None:
        """Store rows (best effort)."""
        ...


def cache_key(identity: dict[str, Any], request: ScoreRequest, document: str) -> str:
    """sha256 of the request's fingerprint (the model's ``identity`` and the request's options) and the texts."""
    return _key(_request_digest(identity, request), request.query, document)


def _request_digest(identity: dict[str, Any], request: ScoreRequest) -> str:
    return Fingerprint.of(identity, request.truncation, request.chunking, request.prompt).digest


def _key(digest: str, query: str, document: str) -> str:
    payload = json.dumps([digest, query, document], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()


def _row_size(key: str, row: Row) -> int:
    # What an entry costs in memory, roughly: the key, the list and its numbers.
    return 120 + len(key) + 32 * len(row)


class LRUScoreCache:
    """In-process least-recently-used cache, bounded in entries and in (approximate) bytes."""

    kind = "memory"

    def __init__(self, max_entries: int, max_bytes: int = 256 * 2**20) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ConfigError(f"cache size must be at least 1 entry and 1 byte, got {max_entries} and {max_bytes}")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.stats = CacheStats()
        self._entries: OrderedDict[str, Row] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        """Approximate memory held by the entries."""
        return self._bytes

    def get_many(self, keys: Sequence[str]) -> list[Row | None]:
        with self._lock:
            rows = []
            for key in keys:
                row = self._entries.get(key)
                if row is not None:
                    self._entries.move_to_end(key)
                rows.append(row)
            hits = sum(row is not None for row in rows)
            self.stats.hits += hits
            self.stats.misses += len(rows) - hits
            return rows

    def put_many(self, items: Sequence[tuple[str, Row]]) -> None:
        with self._lock:
            for key, row in items:
                old = self._entries.pop(key, None)
                if old is not None:
                    self._bytes -= _row_size(key, old)
                self._entries[key] = row
                self._bytes += _row_size(key, row)
            while self._entries and (len(self._entries) > self.max_entries or self._bytes > self.max_bytes):
                key, row = self._entries.popitem(last=False)
                self._bytes -= _row_size(key, row)


def _per_document_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(ScoredRequest) if f.name != "usage"]


class CachedScorer:
    """A ``Scorer`` with a result cache in front; same interface, so façades and the batcher use either."""

    def __init__(self, scorer: RequestScorer, cache: ScoreCache, identity: dict[str, Any]) -> None:
        self.scorer = scorer
        self.cache = cache
        self.identity = identity
        self._fields = _per_document_fields()
        self._shapes: list[tuple[tuple[int, ...], np.dtype[Any]]] | None = None  # each field's, on first use

    @property
    def tokenizer(self) -> PairTokenizer:
        return self.scorer.tokenizer

    @property
    def backend(self) -> Backend:
        return self.scorer.backend

    def with_backend(self, backend: Backend) -> CachedScorer:
        """The same cache in front of ``backend`` (e.g. one that records metrics)."""
        return CachedScorer(self.scorer.with_backend(backend), self.cache, self.identity)

    def score(self, requests: Sequence[ScoreRequest], batching: BatchingOptions) -> list[ScoredRequest]:
        """``Scorer.score``, answering cached documents from the cache and scoring only the rest."""
        digests = [_request_digest(self.identity, r) for r in requests]
        keys = [
            [_key(digest, r.query, d) for d in r.documents] if r.use_cache else []
            for r, digest in zip(requests, digests, strict=True)
        ]
        found = [self._lookup(k, r) for k, r in zip(keys, requests, strict=True)]
        missing = [[i for i, row in enumerate(rows) if row is None] for rows in found]
        partial = [
            dataclasses.replace(r, documents=[r.documents[i] for i in where])
            for r, where in zip(requests, missing, strict=True)
            if where
        ]
        computed = iter(self.scorer.score(partial, batching)) if partial else iter(())
        results = []
        for request, rows, where, request_keys in zip(requests, found, missing, keys, strict=True):
            if not where:
                results.append(self._assemble(request, rows, None))
                continue
            scored = next(computed)
            new_rows = [[_plain(getattr(scored, name)[j]) for name in self._fields] for j in range(len(where))]
            for i, row in zip(where, new_rows, strict=True):
                rows[i] = row
            if request_keys:
                self.cache.put_many([(request_keys[i], row) for i, row in zip(where, new_rows, strict=True)])
            results.append(self._assemble(request, rows, scored))
        return results

    def _lookup(self, keys: list[str], request: ScoreRequest) -> list[Row | None]:
        if not keys:  # the request asked not to use the cache
            return [None] * len(request.documents)
        rows = self.cache.get_many(keys)
        return self._checked(request, rows) if any(row is not None for row in rows) else rows

    def _checked(self, request: ScoreRequest, rows: list[Row | None]) -> list[Row | None]:
        """Rows not shaped as this scorer writes them (a shared cache holds anything) become misses, counted as
        cache errors; the row computed in their place overwrites them."""
        if self._shapes is None:
            empty = self._empty(request)
            self._shapes = [(getattr(empty, n).shape[1:], getattr(empty, n).dtype) for n in self._fields]
        checked = [row if row is None or _fits(row, self._shapes) else None for row in rows]
        bad = sum(row is not None for row in rows) - sum(row is not None for row in checked)
        if bad:
            stats = self.cache.stats
            stats.hits, stats.misses, stats.errors = stats.hits - bad, stats.misses + bad, stats.errors + bad
            _log.warning("result cache (%s): %d entries are not rows of this scorer; computed", self.cache.kind, bad)
        return checked

    def _assemble(self, request: ScoreRequest, rows: list[Row | None], scored: ScoredRequest | None) -> ScoredRequest:
        """A ScoredRequest in document order from full rows; usage counts what the model read plus the hits."""
        template = scored if scored is not None else self._empty(request)
        columns: dict[str, Any] = {}
        for k, name in enumerate(self._fields):
            like = getattr(template, name)
            columns[name] = np.array([row[k] for row in rows], dtype=like.dtype).reshape((len(rows), *like.shape[1:]))  # type: ignore[index]
        computed = 0 if scored is None else len(getattr(scored, self._fields[0]))
        usage = dataclasses.replace(template.usage, cached_documents=len(rows) - computed)
        return ScoredRequest(usage=usage, **columns)

    def _empty(self, request: ScoreRequest) -> ScoredRequest:
        # Scoring nothing gives the shapes and dtypes of every column, and a zero Usage.
        (empty,) = self.scorer.score([dataclasses.replace(request, documents=[])], BatchingOptions())
        return empty


def _fits(row: Any, shapes: list[tuple[tuple[int, ...], np.dtype[Any]]]) -> bool:
    """Whether ``row`` has one value per field, each of the field's shape and kind of number."""
    if not isinstance(row, list) or len(row) != len(shapes):
        return False
    for value, (shape, dtype) in zip(row, shapes, strict=True):
        try:
            kind = np.asarray(value).dtype.kind
            converted = np.asarray(value, dtype=dtype)  # out of the column's range: OverflowError
        except (ValueError, TypeError, OverflowError):  # ragged lists, objects
            return False
        if converted.shape != shape or kind not in ("iuf" if dtype.kind == "f" else "iu"):
            return False
    return True


def _plain(value: Any) -> Any:
    """A numpy scalar or row as JSON-ready numbers (floats keep all float32 digits)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value.item() if isinstance(value, np.generic) else value


def open_cache(options: CacheOptions) -> ScoreCache | None:
    """The cache ``options`` describe: Redis when a URL is given, else in-process, else ``None``."""
    if options.url is not None:
        try:
            from crossrank.engine.redis_cache import RedisScoreCache
        except ImportError as exc:
            raise BackendUnavailableError(
                f"the Redis result cache needs redis-py ({exc.name} is not installed)",
                fix="pip install 'crossrank[redis]'",
            ) from exc
        return RedisScoreCache(options.url, ttl=options.ttl, prefix=options.prefix, timeout=options.timeout)
    if options.size > 0:
        return LRUScoreCache(options.size, options.max_bytes)
    return None
