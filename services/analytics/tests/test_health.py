"""Platform health read from Prometheus text: rates between two scrapes, histogram quantiles, missing figures
left empty."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from om_analytics.health import parse, quantile, service_health
from om_runtime.cache import CacheReads
from om_runtime.service import ServiceRuntime
from om_runtime.settings import ServiceSettings

# The runtime's series, as every service exposes them.
BEFORE = """
# TYPE om_consumer_events_total counter
om_consumer_events_total{consumer="feature",topic="market.trades.v1"} 100
# TYPE om_consumer_dead_letters_total counter
om_consumer_dead_letters_total{cause="decode",consumer="feature",topic="market.trades.v1"} 1
# TYPE om_http_requests_total counter
om_http_requests_total{app_name="feature",method="GET",route="/v1/x",status="200"} 10
# TYPE om_http_request_duration_seconds histogram
om_http_request_duration_seconds_bucket{app_name="feature",method="GET",route="/v1/x",le="0.01"} 10
om_http_request_duration_seconds_bucket{app_name="feature",method="GET",route="/v1/x",le="0.1"} 10
om_http_request_duration_seconds_bucket{app_name="feature",method="GET",route="/v1/x",le="+Inf"} 10
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 10
"""
NOW = """
# TYPE om_consumer_events_total counter
om_consumer_events_total{consumer="feature",topic="market.trades.v1"} 250
om_consumer_events_total{consumer="feature",topic="market.signals.v1"} 50
# TYPE om_consumer_dead_letters_total counter
om_consumer_dead_letters_total{cause="decode",consumer="feature",topic="market.trades.v1"} 5
# TYPE om_consumer_systemic_failures_total counter
om_consumer_systemic_failures_total{consumer="feature",error="OperationalError"} 2
# TYPE om_http_requests_total counter
om_http_requests_total{app_name="feature",method="GET",route="/v1/x",status="200"} 108
om_http_requests_total{app_name="feature",method="GET",route="/v1/x",status="503"} 2
# TYPE om_http_request_duration_seconds histogram
om_http_request_duration_seconds_bucket{app_name="feature",method="GET",route="/v1/x",le="0.01"} 60
om_http_request_duration_seconds_bucket{app_name="feature",method="GET",route="/v1/x",le="0.1"} 110
om_http_request_duration_seconds_bucket{app_name="feature",method="GET",route="/v1/x",le="+Inf"} 110
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 15
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 1.5e+08
"""


def test_quantile_interpolates_within_a_bucket() -> None:
    buckets = [(0.01, 50.0), (0.1, 100.0), (float("inf"), 100.0)]
    assert quantile(buckets, 0.5) == 0.01
    assert quantile(buckets, 0.99) == round(0.01 + 0.09 * 49 / 50, 6)
    assert quantile([(0.1, 0.0), (float("inf"), 0.0)], 0.5) is None


def test_service_health_from_two_scrapes() -> None:
    health = service_health("feature", parse(NOW, at=20.0), parse(BEFORE, at=10.0))
    assert health.up and health.error is None
    assert health.processing_rate == 20.0  # (250 + 50 - 100) / 10 s
    assert health.dead_letter_rate == 0.4  # (5 - 1) / 10 s
    assert health.error_rate == 0.2  # 2 failed batches (a counter first seen now started at 0) / 10 s
    assert health.cpu_seconds_per_second == 0.5
    assert health.memory_bytes == 1.5e8
    # Since the first scrape: 50 requests under 10 ms, 50 between 10 and 100 ms
    assert health.http_p50_s == 0.01
    assert health.http_p99_s == round(0.01 + 0.09 * 49 / 50, 6)
    assert health.http_error_rate == round(2 / 110, 6)
    # This service exposes no latency, cache or pool series: those figures stay empty
    assert (health.processing_p50_s, health.cache_hit_rate, health.db_pool_in_use) == (None,) * 3


def test_a_service_without_a_series_leaves_its_figure_empty() -> None:
    health = service_health("feature", parse(BEFORE, at=20.0), parse(BEFORE, at=10.0))
    assert health.error_rate is None  # no systemic-failure series exposed
    assert health.processing_rate == 0.0


def test_the_first_scrape_has_no_rates_and_an_unreachable_service_is_down() -> None:
    first = service_health("feature", parse(NOW, at=1.0), None)
    assert first.up and first.processing_rate is None and first.memory_bytes == 1.5e8
    down = service_health("ingest", None, None, "ConnectError: refused")
    assert (down.up, down.error) == (False, "ConnectError: refused")


# Processing latency, cache reads and pool use: two consumers' topics, two caches, a primary and a replica pool.
RUNTIME_BEFORE = """
# TYPE om_consumer_processing_latency_seconds histogram
om_consumer_processing_latency_seconds_bucket{consumer="analytics",topic="a",le="0.01"} 10
om_consumer_processing_latency_seconds_bucket{consumer="analytics",topic="a",le="0.1"} 10
om_consumer_processing_latency_seconds_bucket{consumer="analytics",topic="a",le="+Inf"} 10
# TYPE om_cache_reads_total counter
om_cache_reads_total{cache="x",result="hit"} 90
om_cache_reads_total{cache="x",result="miss"} 10
"""
RUNTIME_NOW = """
# TYPE om_consumer_processing_latency_seconds histogram
om_consumer_processing_latency_seconds_bucket{consumer="analytics",topic="a",le="0.01"} 40
om_consumer_processing_latency_seconds_bucket{consumer="analytics",topic="a",le="0.1"} 50
om_consumer_processing_latency_seconds_bucket{consumer="analytics",topic="a",le="+Inf"} 50
om_consumer_processing_latency_seconds_bucket{consumer="analytics",topic="b",le="0.01"} 10
om_consumer_processing_latency_seconds_bucket{consumer="analytics",topic="b",le="0.1"} 60
om_consumer_processing_latency_seconds_bucket{consumer="analytics",topic="b",le="+Inf"} 70
# TYPE om_cache_reads_total counter
om_cache_reads_total{cache="x",result="hit"} 120
om_cache_reads_total{cache="x",result="miss"} 30
om_cache_reads_total{cache="y",result="hit"} 10
# TYPE om_db_pool_in_use gauge
om_db_pool_in_use{app_name="analytics",pool="primary"} 2
om_db_pool_in_use{app_name="analytics",pool="replica"} 1
"""


def test_processing_latency_cache_hit_rate_and_pool_use_from_two_scrapes() -> None:
    health = service_health("analytics", parse(RUNTIME_NOW, at=20.0), parse(RUNTIME_BEFORE, at=10.0))
    # Since the first scrape, both topics: 30 + 10 under 10 ms, 10 + 50 up to 100 ms, 10 beyond (110 in all).
    assert health.processing_p50_s == round(0.01 + 0.09 * (55 - 40) / 60, 6)  # rank 55 of 110
    assert health.processing_p99_s == 0.1  # rank 108.9 lies beyond the last finite bound: that bound
    # Since the first scrape: (120 - 90) + 10 hits out of 60 reads.
    assert health.cache_hit_rate == round(40 / 60, 6)
    assert health.db_pool_in_use == 3.0  # connections checked out, over both pools


def test_without_a_previous_scrape_or_new_reads_the_hit_rate_is_since_the_start() -> None:
    assert service_health("a", parse(RUNTIME_NOW, at=1.0), None).cache_hit_rate == round(130 / 160, 6)
    same = service_health("a", parse(RUNTIME_NOW, at=2.0), parse(RUNTIME_NOW, at=1.0))
    assert same.cache_hit_rate == round(130 / 160, 6)
    assert service_health("a", parse(BEFORE, at=1.0), None).cache_hit_rate is None  # no cache read at all


async def test_a_real_service_metrics_text_gives_the_runtime_figures() -> None:
    """The runtime's own /metrics output, with the series moved by hand-made events, reads, and pool statistics."""
    runtime = ServiceRuntime(ServiceSettings(service_name="svc"))
    runtime.pool_metrics.watch(lambda: {"primary": {"pool_size": 4, "pool_available": 1, "pool_max": 5}})
    app = runtime.create_app(title="svc")
    reads = CacheReads("health-test")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        before = parse((await client.get("/metrics")).text, at=0.0)
        now = datetime.now(UTC)
        # 50 events 4 ms old and 50 events 20 ms old when applied.
        ages = [0.004] * 50 + [0.02] * 50
        runtime.consumer_metrics.applied("svc", "t", [now - timedelta(seconds=a) for a in ages], now)
        for value in ("hit", "hit", "hit", None):
            reads.seen(value)
        after = parse((await client.get("/metrics")).text, at=10.0)
    health = service_health("svc", after, before)
    assert health.processing_rate == 10.0  # 100 events in 10 s
    assert health.processing_p50_s == 0.005  # rank 50: the top of the 5 ms bucket
    assert health.processing_p99_s == round(0.01 + 0.015 * 49 / 50, 6)  # rank 99: 49 of 50 into (10 ms, 25 ms]
    assert health.cache_hit_rate == 0.75
    assert health.db_pool_in_use == 3.0  # 4 open, 1 idle
