"""Prometheus metrics of one server (own registry, so several apps can live in one process)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from crossrank.engine.batcher import MicroBatcher
from crossrank.engine.cache import CacheStats
from crossrank.engine.observed import BatchStats
from crossrank.types import Usage

__all__ = ["Metrics"]

# Latency buckets from 1 ms to ~80 s (x1.5 geometric, like text-embeddings-inference's).
_SECONDS = tuple(0.001 * 1.5**i for i in range(29))
_PAIRS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_TOKENS = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


class Metrics:
    """The server's counters, gauges and histograms (``crossrank_*``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "crossrank_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "crossrank_request_duration_seconds", "HTTP request latency", ["route"], buckets=_SECONDS, registry=r
        )
        self.queue_seconds = Histogram(
            "crossrank_queue_duration_seconds",
            "time a rerank request waited for the worker",
            buckets=_SECONDS,
            registry=r,
        )
        self.slow = Counter("crossrank_slow_requests", "rerank requests slower than --slow-ms", ["route"], registry=r)
        self.overloaded = Counter("crossrank_overloaded_requests", "requests refused with 429 (queue full)", registry=r)
        self.dropped = Counter(
            "crossrank_dropped_requests", "requests whose client disconnected before they were answered", registry=r
        )
        self.batch_pairs = Histogram("crossrank_batch_pairs", "pairs per forward pass", buckets=_PAIRS, registry=r)
        self.batch_tokens = Histogram(
            "crossrank_batch_tokens", "padded tokens per forward pass", buckets=_TOKENS, registry=r
        )
        self.inference_seconds = Histogram(
            "crossrank_inference_duration_seconds", "wall time of one forward pass", buckets=_SECONDS, registry=r
        )
        self.forward_passes = Counter("crossrank_forward_passes", "forward passes run by the model", registry=r)
        self.pairs = Counter("crossrank_pairs_scored", "(query, document) pairs scored by the model", registry=r)
        self.tokens = Counter("crossrank_tokens", "real (unpadded) tokens read by the model", registry=r)
        self.padded_tokens = Counter("crossrank_padded_tokens", "tokens computed, padding included", registry=r)
        self.truncated_pairs = Counter(
            "crossrank_truncated_pairs", "documents cut to fit max_length (tokens lost to the model)", registry=r
        )
        self.truncated_tokens = Counter(
            "crossrank_truncated_tokens", "document tokens dropped by truncation", registry=r
        )
        self.truncated_queries = Counter("crossrank_truncated_queries", "queries cut to their cap", registry=r)
        self.documents = Histogram(
            "crossrank_request_documents", "documents per rerank request", buckets=_PAIRS, registry=r
        )
        self.in_flight = Gauge("crossrank_requests_in_flight", "rerank requests being answered", registry=r)
        self.ready = Gauge("crossrank_ready", "1 once the model is loaded and warm", registry=r)
        # Queued work in the model's unit (README "Limits"); crossrank_queue_pairs is the same count as windows.
        self.queue_pairs = Gauge(
            "crossrank_queue_pairs", "windows (query-chunk pairs) waiting for the worker", registry=r
        )
        self.queue_windows = Gauge(
            "crossrank_queue_windows", "windows (query-chunk pairs) waiting for the worker", registry=r
        )
        self.queue_tokens = Gauge("crossrank_queue_tokens", "tokens of the windows waiting for the worker", registry=r)
        self.queue_requests = Gauge("crossrank_queue_requests", "requests waiting for the worker", registry=r)
        self.max_request_tokens = Gauge(
            "crossrank_max_request_tokens", "tokens of planned work a request may hold (0: no cap)", registry=r
        )
        self.throughput = Gauge(
            "crossrank_throughput_tokens_per_second", "recent scoring throughput (Retry-After's basis)", registry=r
        )

    def watch_cache(self, stats: CacheStats, kind: str) -> None:
        """Export the result cache's counters (read at scrape time)."""
        self.registry.register(_CacheCollector(stats, kind))

    def watch_queue(self, batcher: MicroBatcher) -> None:
        """Read the queue's depth, bounds and counters at scrape time."""
        self.queue_pairs.set_function(lambda: batcher.queued_windows)
        self.queue_windows.set_function(lambda: batcher.queued_windows)
        self.queue_tokens.set_function(lambda: batcher.queued_tokens)
        self.queue_requests.set_function(lambda: batcher.queued_requests)
        self.max_request_tokens.set_function(lambda: batcher.max_request_tokens or 0)
        self.throughput.set_function(lambda: batcher.tokens_per_second)
        self.registry.register(_QueueCollector(batcher))

    def observe_batch(self, stats: BatchStats) -> None:
        """One forward pass (called on the worker thread; prometheus-client is thread-safe)."""
        self.forward_passes.inc()
        self.batch_pairs.observe(stats.pairs)
        self.batch_tokens.observe(stats.padded_tokens)
        self.inference_seconds.observe(stats.seconds)
        self.pairs.inc(stats.pairs)
        self.tokens.inc(stats.tokens)
        self.padded_tokens.inc(stats.padded_tokens)

    def observe_usage(self, usage: Usage, documents: int, queue_seconds: float) -> None:
        """One answered rerank request."""
        self.documents.observe(documents)
        self.queue_seconds.observe(queue_seconds)
        self.truncated_pairs.inc(usage.truncated_documents)
        self.truncated_tokens.inc(usage.truncated_tokens)
        self.truncated_queries.inc(usage.truncated_queries)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


class _QueueCollector(Collector):
    def __init__(self, batcher: MicroBatcher) -> None:
        self.batcher = batcher

    def collect(self) -> Iterator[CounterMetricFamily]:
        stats = self.batcher.stats
        for name, value, text in (
            (
                "crossrank_dropped_windows",
                stats.dropped_windows,
                "planned windows never computed because their caller had gone (queued, or between forward passes)",
            ),
            (
                "crossrank_stopped_scoring",
                stats.stopped_calls,
                "scoring calls stopped between forward passes because all their callers had gone",
            ),
            (
                "crossrank_refused_requests",
                stats.refused_requests,
                "requests answered 413 before queueing: their planned work passed --max-request-tokens",
            ),
        ):
            yield CounterMetricFamily(name, text, value=value)


class _CacheCollector(Collector):
    def __init__(self, stats: CacheStats, kind: str) -> None:
        self.stats = stats
        self.kind = kind

    def collect(self) -> Iterator[CounterMetricFamily]:
        for name, value, text in (
            ("crossrank_cache_hits", self.stats.hits, "documents answered from the result cache"),
            ("crossrank_cache_misses", self.stats.misses, "documents the result cache did not hold"),
            ("crossrank_cache_errors", self.stats.errors, "result-cache calls that failed (computed instead)"),
        ):
            family = CounterMetricFamily(name, text, labels=["cache"])
            family.add_metric([self.kind], value)
            yield family
