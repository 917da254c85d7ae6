"""Metrics every service exposes at /metrics. HTTP requests: count by route and status, and latency, labelled
`app_name` like the FastStream Kafka metrics (a `service` label would clash with Prometheus target labels). Also the
consumers' processing latency (event time → applied) and the database pools' use, both built at scrape time.

The alerts (error rate, p99 latency, spikes of 401/429) and the Grafana dashboard read these series.
Routes are labelled by their template (`/v1/markets/{market_id}`), never by the raw path, to bound cardinality.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Latency buckets in seconds, from a cache hit to a slow upstream call.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Paths the probes and Prometheus call; counting them would drown the real traffic.
UNMEASURED = frozenset({"/health", "/ready", "/metrics"})


class HttpMetricsMiddleware:
    """ASGI middleware recording `om_http_requests_total` and `om_http_request_duration_seconds`."""

    def __init__(self, app: ASGIApp, *, registry: CollectorRegistry, service: str) -> None:
        self.app = app
        self.service = service
        self.requests = Counter(
            "om_http_requests",
            "HTTP requests handled, by route template, method and status code",
            ["app_name", "method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "om_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template and method",
            ["app_name", "method", "route"],
            buckets=BUCKETS,
            registry=registry,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNMEASURED:
            await self.app(scope, receive, send)
            return
        status = 500  # an exception before the response starts is answered with a 500
        started = time.perf_counter()

        async def send_and_record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_record_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"]
            self.requests.labels(self.service, method, route, str(status)).inc()
            self.latency.labels(self.service, method, route).observe(time.perf_counter() - started)


# -- caches: hits and misses -------------------------------------------------------------------------------------

T = TypeVar("T")

#: One counter for the process, so any read path can count without a registry handed down to it; every
#: `ServiceRuntime` registers it into its own registry (om_runtime.service).
CACHE_READS = Counter(
    "om_cache_reads", "Reads of a Redis cache, by cache and result (hit, miss)", ("cache", "result"), registry=None
)


class CacheReads:
    """Counts the reads of one cache (create one per cache, at import: the labelled children are looked up once)."""

    def __init__(self, cache: str) -> None:
        self.cache = cache
        self._hit = CACHE_READS.labels(cache, "hit")
        self._miss = CACHE_READS.labels(cache, "miss")

    def seen(self, value: T) -> T:
        """Count `value` as read (None or empty: a miss) and return it unchanged."""
        (self._hit if value else self._miss).inc()
        return value

    def hit(self) -> None:
        self._hit.inc()

    def miss(self) -> None:
        self._miss.inc()


# -- consumers: event time → applied ------------------------------------------------------------------------------

#: Event time → applied, in seconds: from a live event (milliseconds) to a backlog drained minutes later. Replayed or
#: imported history (event times long past) lands above the last bound, in +Inf.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
#: Each bucket's `le` label, +Inf last.
_LATENCY_LE = (*(repr(float(b)) for b in LATENCY_BUCKETS), "+Inf")
_LATENCY = "om_consumer_processing_latency_seconds"
_LATENCY_HELP = "Time from an event's event time (occurred_at) to its batch being applied"


class ProcessingLatency:
    """`om_consumer_processing_latency_seconds{consumer, topic}`, observed once per applied batch.

    A consumer applies 20,000+ events/s, so this is a histogram kept as plain per-bucket counts and turned into the
    Prometheus family only when /metrics is scraped: an event costs one subtraction, one bisect and two additions
    (prometheus_client's `Histogram.observe` takes a lock and scans its buckets on every call)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        #: Per (consumer, topic): the count in each bucket (not cumulative; the last is +Inf), then the sum.
        self._series: dict[tuple[str, str], list[float]] = {}
        registry.register(self)

    def observe(self, consumer: str, topic: str, event_times: Iterable[datetime], now: datetime | None = None) -> None:
        """Observe each event's age at `now` (default the current time: one clock read per batch). Event times are
        timezone-aware, as the contracts' are."""
        now = datetime.now(UTC) if now is None else now
        counts = self._series.get((consumer, topic))
        if counts is None:
            counts = self._series[(consumer, topic)] = [0.0] * (len(LATENCY_BUCKETS) + 2)
        total = 0.0
        for occurred_at in event_times:
            age = (now - occurred_at).total_seconds()  # faster than two timestamps
            if age < 0.0:  # an event time ahead of this clock (skew): applied at once
                age = 0.0
            counts[bisect_left(LATENCY_BUCKETS, age)] += 1
            total += age
        counts[-1] += total

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(_LATENCY, _LATENCY_HELP, labels=("consumer", "topic"))

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(_LATENCY, _LATENCY_HELP, labels=("consumer", "topic"))
        for (consumer, topic), counts in self._series.items():
            cumulative, buckets = 0.0, []
            for le, count in zip(_LATENCY_LE, counts, strict=False):  # (the sum comes last in counts)
                cumulative += count
                buckets.append((le, cumulative))
            family.add_metric([consumer, topic], buckets, counts[-1])
        yield family


# -- database pools -----------------------------------------------------------------------------------------------

#: Where a service's pools' statistics come from: pool name ("primary", "replica") → psycopg_pool's get_stats().
PoolStatsSource = Callable[[], Mapping[str, Mapping[str, int]]]


class PoolMetrics:
    """`om_db_pool_*`: each database pool's size and use, read from psycopg_pool's `get_stats()` when /metrics is
    scraped (nothing is done on a connection's checkout or return)."""

    def __init__(self, registry: CollectorRegistry, service: str) -> None:
        self.service = service
        self._sources: list[PoolStatsSource] = []
        registry.register(self)

    def watch(self, source: PoolStatsSource) -> None:
        self._sources.append(source)

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        size, max_size, in_use, idle, waiting, requests, wait = families
        for source in self._sources:
            for pool, stats in source().items():
                labels = [self.service, pool]
                available = stats.get("pool_available", 0)
                size.add_metric(labels, stats.get("pool_size", 0))
                max_size.add_metric(labels, stats.get("pool_max", 0))
                in_use.add_metric(labels, max(0, stats.get("pool_size", 0) - available))
                idle.add_metric(labels, available)
                waiting.add_metric(labels, stats.get("requests_waiting", 0))
                requests.add_metric(labels, stats.get("requests_num", 0))
                wait.add_metric(labels, stats.get("requests_wait_ms", 0) / 1000)
        return iter(families)

    @staticmethod
    def _families() -> tuple[Any, ...]:
        labels = ("app_name", "pool")
        return (
            GaugeMetricFamily("om_db_pool_size", "Connections the pool holds open", labels=labels),
            GaugeMetricFamily("om_db_pool_max_size", "Connections the pool may open at most", labels=labels),
            GaugeMetricFamily("om_db_pool_in_use", "Connections checked out of the pool now", labels=labels),
            GaugeMetricFamily("om_db_pool_idle", "Open connections waiting in the pool", labels=labels),
            GaugeMetricFamily("om_db_pool_waiting", "Requests waiting for a connection now", labels=labels),
            CounterMetricFamily("om_db_pool_requests", "Connections asked of the pool", labels=labels),
            CounterMetricFamily(
                "om_db_pool_wait_seconds", "Time requests spent waiting for a connection", labels=labels
            ),
        )
