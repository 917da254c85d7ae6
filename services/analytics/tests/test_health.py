"""Platform health read from Prometheus text: rates between two scrapes, histogram quantiles, missing figures
left empty."""

from __future__ import annotations

from om_analytics.health import parse, quantile, service_health

BEFORE = """
# TYPE faststream_received_processed_messages_total counter
faststream_received_processed_messages_total{app_name="feature",handler="t",status="acked"} 100
# TYPE faststream_published_messages_total counter
faststream_published_messages_total{app_name="feature",destination="platform.dead-letters.v1",status="success"} 1
# TYPE faststream_received_processed_messages_duration_seconds histogram
faststream_received_processed_messages_duration_seconds_bucket{app_name="feature",handler="t",le="0.01"} 10
faststream_received_processed_messages_duration_seconds_bucket{app_name="feature",handler="t",le="0.1"} 10
faststream_received_processed_messages_duration_seconds_bucket{app_name="feature",handler="t",le="+Inf"} 10
faststream_received_processed_messages_duration_seconds_count{app_name="feature",handler="t"} 10
faststream_received_processed_messages_duration_seconds_sum{app_name="feature",handler="t"} 0.05
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 10
"""
NOW = """
# TYPE faststream_received_processed_messages_total counter
faststream_received_processed_messages_total{app_name="feature",handler="t",status="acked"} 290
faststream_received_processed_messages_total{app_name="feature",handler="t",status="error"} 10
# TYPE faststream_published_messages_total counter
faststream_published_messages_total{app_name="feature",destination="platform.dead-letters.v1",status="success"} 5
faststream_published_messages_total{app_name="feature",destination="feature.vectors.v1",status="success"} 500
# TYPE faststream_received_processed_messages_duration_seconds histogram
faststream_received_processed_messages_duration_seconds_bucket{app_name="feature",handler="t",le="0.01"} 60
faststream_received_processed_messages_duration_seconds_bucket{app_name="feature",handler="t",le="0.1"} 110
faststream_received_processed_messages_duration_seconds_bucket{app_name="feature",handler="t",le="+Inf"} 110
faststream_received_processed_messages_duration_seconds_count{app_name="feature",handler="t"} 110
faststream_received_processed_messages_duration_seconds_sum{app_name="feature",handler="t"} 3.0
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
    assert health.processing_rate == 20.0  # (300 - 100) / 10 s
    assert health.dead_letter_rate == 0.4  # (5 - 1) / 10 s
    assert health.cpu_seconds_per_second == 0.5
    assert health.memory_bytes == 1.5e8
    # Since the first scrape: 50 batches under 10 ms, 50 between 10 and 100 ms
    assert health.processing_p50_s == 0.01
    assert health.processing_p99_s == round(0.01 + 0.09 * 49 / 50, 6)
    # Not exposed by the service: left empty, not invented
    assert (health.http_p50_s, health.http_error_rate, health.cache_hit_rate, health.db_pool_in_use) == (None,) * 4
    assert health.error_rate is None  # no exceptions series yet


def test_the_first_scrape_has_no_rates_and_an_unreachable_service_is_down() -> None:
    first = service_health("feature", parse(NOW, at=1.0), None)
    assert first.up and first.processing_rate is None and first.memory_bytes == 1.5e8
    down = service_health("ingest", None, None, "ConnectError: refused")
    assert (down.up, down.error) == (False, "ConnectError: refused")
