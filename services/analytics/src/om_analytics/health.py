"""Platform health from each service's Prometheus `/metrics` text: pure parsing and arithmetic, no I/O.

Rates are differences between two scrapes divided by the time between them; quantiles are read from histogram
buckets (linear within a bucket). The series are the runtime's (`om_consumer_*`, `om_http_*`, `om_cache_*`,
`om_db_pool_*`, `process_*`), which every service exposes where it has the part they measure. A figure a service
does not expose stays None: nothing is invented.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from om_contracts import ConsumerLag, ServiceHealth
from om_contracts.topics import DEAD_LETTERS

HTTP_HISTOGRAMS = ("om_http_request_duration_seconds", "http_server_request_duration_seconds")
#: Counters, the runtime's first: events applied, failed batches (systemic failures), dead letters.
PROCESSED = ("om_consumer_events_total", "faststream_received_processed_messages_total")
FAILED = ("om_consumer_systemic_failures_total", "faststream_received_processed_messages_exceptions_total")
DEAD_LETTERED = "om_consumer_dead_letters_total"
#: Event time → applied, per consumer and topic (the runtime's group consumer and feature's loop).
PROCESSING_HISTOGRAMS = ("om_consumer_processing_latency_seconds",)
#: Reads of Redis caches through `om_runtime.cache.CacheReads`, labelled `result` = hit or miss.
CACHE_READS = "om_cache_reads_total"
#: Connections checked out of the service's database pools when it was scraped (`om_runtime.metrics.PoolMetrics`).
POOL_IN_USE = "om_db_pool_in_use"
#: ServiceHealth fields no service's /metrics has a series for, which analytics would leave out of its answers
#: rather than serve as a null meaning "not built": none since the runtime measures processing latency, cache reads
#: and pool use (a service without one of them, e.g. without a cache, reports null for it).
UNMEASURED: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Scrape:
    """One scrape of a service: every sample as (name, sorted labels) → value, at a monotonic time."""

    at: float
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)

    def total(self, name: str, **match: str) -> float | None:
        values = [v for (n, labels), v in self.samples.items() if n == name and _matches(labels, match)]
        return sum(values) if values else None

    def series(self, name: str) -> list[tuple[dict[str, str], float]]:
        return [(dict(labels), v) for (n, labels), v in self.samples.items() if n == name]

    def names(self) -> set[str]:
        return {n for n, _ in self.samples}


def _matches(labels: tuple[tuple[str, str], ...], match: dict[str, str]) -> bool:
    d = dict(labels)
    return all(d.get(k) == v for k, v in match.items())


def parse(text: str, at: float) -> Scrape:
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return Scrape(at=at, samples=samples)


def _rate(now: Scrape, before: Scrape | None, name: str, **match: str) -> float | None:
    """Δ counter / Δt between two scrapes (a counter first seen now started at 0)."""
    current = now.total(name, **match)
    if current is None or before is None or now.at <= before.at:
        return None
    previous = before.total(name, **match) or 0.0
    return max(0.0, current - previous) / (now.at - before.at)


def quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """The q-quantile from cumulative histogram buckets [(upper bound, count)], linear within a bucket."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound  # beyond the last finite bound: report that bound
            inside = count - lower_count
            fraction = (rank - lower_count) / inside if inside > 0 else 1.0
            return round(lower_bound + (bound - lower_bound) * fraction, 6)
        lower_bound, lower_count = bound, count
    return None


def _histogram(now: Scrape, before: Scrape | None, names: tuple[str, ...]) -> tuple[float | None, float | None]:
    for name in names:
        series = now.series(f"{name}_bucket")
        if not series:
            continue
        by_bound: dict[float, float] = {}
        for labels, value in series:
            by_bound[float(labels["le"])] = by_bound.get(float(labels["le"]), 0.0) + value
        if before is not None:  # the distribution since the last scrape, when there was traffic in between
            for labels, value in before.series(f"{name}_bucket"):
                by_bound[float(labels["le"])] -= value
            if not any(v > 0 for v in by_bound.values()):
                by_bound = {}
                for labels, value in series:
                    by_bound[float(labels["le"])] = by_bound.get(float(labels["le"]), 0.0) + value
        buckets = list(by_bound.items())
        return quantile(buckets, 0.5), quantile(buckets, 0.99)
    return None, None


def _first_rate(now: Scrape, before: Scrape | None, names: tuple[str, ...]) -> float | None:
    """The rate of the first of `names` the service exposes."""
    name = next((n for n in names if now.total(n) is not None), None)
    return _rate(now, before, name) if name else None


def _first_with(now: Scrape, *parts: str) -> str | None:
    return next((n for n in sorted(now.names()) if all(p in n for p in parts)), None)


def service_health(service: str, now: Scrape | None, before: Scrape | None, error: str | None = None) -> ServiceHealth:
    """A service's health from its latest scrape (and the one before, for rates); `now` None means unreachable."""
    if now is None:
        return ServiceHealth(service=service, up=False, error=error or "no answer")
    http_p50, http_p99 = _histogram(now, before, HTTP_HISTOGRAMS)
    http_error_rate = None
    if requests := _first_with(now, "http_", "requests_total"):
        total = now.total(requests) or 0.0
        errors = sum(v for labels, v in now.series(requests) if _status(labels).startswith("5"))
        http_error_rate = round(errors / total, 6) if total else 0.0
    processing_p50, processing_p99 = _histogram(now, before, PROCESSING_HISTOGRAMS)
    dead_letters = _rate(now, before, DEAD_LETTERED)
    if dead_letters is None:  # a service publishing through FastStream: its published-to-dead-letters counter
        dead_letters = _rate(now, before, "faststream_published_messages_total", destination=DEAD_LETTERS.name)
    lag = [
        ConsumerLag(
            group=labels.get("group", labels.get("consumer", service)),
            topic=labels.get("topic", ""),
            partition=int(labels.get("partition", 0)),
            lag=max(0, int(value)),
        )
        for name in sorted(n for n in now.names() if "consumer_lag" in n)
        for labels, value in now.series(name)
    ]
    return ServiceHealth(
        service=service,
        up=True,
        processing_rate=_round(_first_rate(now, before, PROCESSED)),
        error_rate=_round(_first_rate(now, before, FAILED)),
        dead_letter_rate=_round(dead_letters),
        processing_p50_s=processing_p50,
        processing_p99_s=processing_p99,
        cache_hit_rate=_hit_rate(now, before),
        db_pool_in_use=now.total(POOL_IN_USE),
        http_p50_s=http_p50,
        http_p99_s=http_p99,
        http_error_rate=http_error_rate,
        cpu_seconds_per_second=_round(_rate(now, before, "process_cpu_seconds_total")),
        memory_bytes=now.total("process_resident_memory_bytes"),
        consumer_lag=lag,
    )


def _hit_rate(now: Scrape, before: Scrape | None) -> float | None:
    """Hits / reads of every cache the service reads: since the previous scrape when it read any meanwhile, else
    since it started; None when it has read none (or has no cache)."""
    hits, reads = now.total(CACHE_READS, result="hit"), now.total(CACHE_READS)
    if not reads:
        return None
    hits = hits or 0.0
    if before is not None and (reads_before := before.total(CACHE_READS)):
        recent = reads - reads_before
        if recent > 0:
            return round(max(0.0, hits - (before.total(CACHE_READS, result="hit") or 0.0)) / recent, 6)
    return round(hits / reads, 6)


def _status(labels: dict[str, str]) -> str:
    return labels.get("status", labels.get("status_code", labels.get("http_status_code", "")))


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 6)
