"""The runtime series every service gets at /metrics: processing latency (event time → applied, a hand-computed
case), database pool use (a real PostgreSQL pool with a connection held and a request waiting) and cache reads."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from om_runtime.cache import CacheReads, create_redis
from om_runtime.consumer import ConsumerMetrics
from om_runtime.db import Database
from om_runtime.metrics import ProcessingLatency
from om_runtime.service import ServiceRuntime
from om_runtime.settings import ServiceSettings

LATENCY = "om_consumer_processing_latency_seconds"


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_latency_buckets_count_and_sum_each_events_age_at_the_batchs_clock() -> None:
    registry = CollectorRegistry()
    latency = ProcessingLatency(registry)
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    ages = [0.003, 0.02, 0.02, 2.0, 1000.0, -1.0]  # the last one stamped a second ahead of this clock: age 0
    latency.observe("svc", "t", [now - timedelta(seconds=a) for a in ages], now)
    latency.observe("svc", "t", [now - timedelta(seconds=0.2)], now)

    def bucket(le: str) -> float | None:
        return sample(registry, f"{LATENCY}_bucket", consumer="svc", topic="t", le=le)

    # Cumulative: ≤5 ms {0.003, 0}, ≤25 ms +2, ≤250 ms +1 (0.2), ≤2.5 s +1 (2.0), +Inf +1 (1000).
    assert [bucket(le) for le in ("0.005", "0.01", "0.025", "0.1", "0.25", "2.5", "300.0", "+Inf")] == [
        2, 2, 4, 4, 5, 6, 6, 7,
    ]  # fmt: skip
    assert sample(registry, f"{LATENCY}_count", consumer="svc", topic="t") == 7
    assert sample(registry, f"{LATENCY}_sum", consumer="svc", topic="t") == pytest.approx(1002.243)


def test_consumer_metrics_count_applied_events_with_their_latency() -> None:
    registry = CollectorRegistry()
    metrics = ConsumerMetrics(registry)
    now = datetime.now(UTC)
    metrics.applied("svc", "t", [now - timedelta(seconds=0.04)] * 3, now)
    assert sample(registry, "om_consumer_events_total", consumer="svc", topic="t") == 3
    assert sample(registry, f"{LATENCY}_bucket", consumer="svc", topic="t", le="0.025") == 0
    assert sample(registry, f"{LATENCY}_bucket", consumer="svc", topic="t", le="0.05") == 3


@pytest.mark.integration
async def test_pool_gauges_follow_a_held_connection_and_a_waiting_request(database_url: str, tmp_path: Path) -> None:
    runtime = ServiceRuntime(ServiceSettings(service_name="svc"))
    db = Database(database_url, schema="svc", migrations=tmp_path, pool_size=1)
    runtime.add_resource(db, name="postgres", check=db.ping)
    registry, labels = runtime.registry, {"app_name": "svc", "pool": "primary"}
    async with db:
        assert sample(registry, "om_db_pool_in_use", **labels) == 0
        assert sample(registry, "om_db_pool_max_size", **labels) == 1
        async with db.pool.connection():
            assert sample(registry, "om_db_pool_in_use", **labels) == 1
            assert sample(registry, "om_db_pool_idle", **labels) == 0
            second = asyncio.create_task(db.ping())  # the pool's only connection is held: it waits
            await asyncio.sleep(0.2)
            assert sample(registry, "om_db_pool_waiting", **labels) == 1
        await second
        assert sample(registry, "om_db_pool_in_use", **labels) == 0
        assert sample(registry, "om_db_pool_idle", **labels) == 1
        assert sample(registry, "om_db_pool_waiting", **labels) == 0
        assert (sample(registry, "om_db_pool_requests_total", **labels) or 0) >= 2
        assert (sample(registry, "om_db_pool_wait_seconds_total", **labels) or 0) >= 0.1


@pytest.mark.integration
async def test_cache_hits_and_misses_show_at_the_services_metrics(redis_url: str) -> None:
    reads = CacheReads("test-cache")
    redis = create_redis(redis_url)
    runtime = ServiceRuntime(ServiceSettings(service_name="svc"), kafka_required=False)
    app = runtime.create_app(title="svc")

    def count(result: str) -> float:
        return sample(runtime.registry, "om_cache_reads_total", cache="test-cache", result=result) or 0.0

    hits, misses = count("hit"), count("miss")  # one counter per process: other tests may have read before
    try:
        await redis.set("test-cache:present", "1")
        assert reads.seen(await redis.get("test-cache:present")) == "1"
        assert reads.seen(await redis.get("test-cache:absent")) is None
        assert reads.seen(await redis.get("test-cache:absent")) is None
    finally:
        await redis.delete("test-cache:present")
        await redis.aclose()
    assert (count("hit") - hits, count("miss") - misses) == (1, 2)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        text = (await client.get("/metrics")).text
    assert 'om_cache_reads_total{cache="test-cache",result="miss"}' in text
