"""Wires feature together: database, Redis, the stateful consumer of the three market topics, the internal API."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from fastapi import FastAPI
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from om_contracts.topics import FEATURE_VECTORS, MARKET_LIFECYCLE, MARKET_SIGNALS, MARKET_TRADES
from om_feature import api
from om_feature.engine import Engine, EngineConfig
from om_feature.features import FeatureConfig
from om_feature.processor import FeatureProcessor
from om_feature.settings import FeatureSettings
from om_feature.stream import KafkaSink, StatefulLoop
from om_runtime.cache import create_redis
from om_runtime.db import Database
from om_runtime.service import ServiceRuntime

MIGRATIONS = Path(__file__).parent / "migrations"
TOPICS = (MARKET_LIFECYCLE, MARKET_TRADES, MARKET_SIGNALS)


class LateEvents(Collector):
    """om_feature_late_events_total{kind}: the engine's count, read at scrape time (nothing on the hot path)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "om_feature_late_events",
            "Trades and signals more than the grace period behind their market's newest event (totals only)",
            labels=("kind",),
        )
        for kind, count in self.engine.late.items():
            family.add_metric((kind,), count)
        yield family


def engine_config(settings: FeatureSettings) -> EngineConfig:
    return EngineConfig(
        features=FeatureConfig(grace_s=settings.grace_s),
        coalesce_ms=settings.coalesce_ms,
        snapshot_every_s=settings.snapshot_every_s,
        max_held_per_market=settings.max_held_per_market,
        max_held_total=settings.max_held_total,
        dedupe_window_s=settings.dedupe_window_s,
    )


def create_app(settings: FeatureSettings | None = None) -> FastAPI:
    settings = settings or FeatureSettings()
    runtime = ServiceRuntime(settings)
    db = Database(settings.database_url, schema="feature", migrations=MIGRATIONS, pool_size=settings.database_pool_size)
    redis = create_redis(settings.redis_url)
    sink = KafkaSink(settings.kafka_bootstrap_servers, client_id=settings.service_name, topic=FEATURE_VECTORS.name)
    engine = Engine(engine_config(settings))
    processor = FeatureProcessor(engine, db, redis, sink, checkpoint_interval_s=settings.checkpoint_interval_s)
    runtime.registry.register(LateEvents(engine))
    loop = StatefulLoop(
        settings.kafka_bootstrap_servers,
        TOPICS,
        processor.process,
        processor,
        sink,
        group=settings.service_name,
        metrics=runtime.consumer_metrics,  # om_consumer_events_total and the rest, on the service's /metrics
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        max_records=settings.max_batch,
    )

    @contextlib.asynccontextmanager
    async def producing() -> AsyncIterator[None]:
        await sink.start()
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                await processor.checkpoint()  # a graceful stop keeps everything applied so far
            await sink.stop()

    runtime.add_resource(db, name="postgres", check=db.ping)
    runtime.add_resource(contextlib.aclosing(redis), name="redis", check=redis.ping)
    runtime.add_resource(producing(), name="producer", check=runtime.checks["kafka"])
    runtime.add_loop("feature-stream", loop.run)
    runtime.add_loop("feature-checkpoints", processor.checkpoint_periodically)
    app = runtime.create_app(
        title="Opinion Market feature",
        description="Streaming per-market features (internal) and the training export of point-in-time snapshots.",
        routers=[api.router(redis, db)],
    )
    app.state.processor = processor
    return app
