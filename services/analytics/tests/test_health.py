"""Platform health read from Prometheus text: rates between two scrapes, histogram quantiles, missing figures
left empty."""

from __future__ import annotations

from om_analytics.health import parse, quantile, service_health

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
    # No service exposes these series: left empty here, and out of what analytics serves
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
