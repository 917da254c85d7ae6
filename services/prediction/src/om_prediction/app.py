"""Wires prediction together: database, Redis cache, the model holder, the consumers, the internal API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI

from om_contracts.topics import FEATURE_VECTORS, MARKET_LIFECYCLE, MODEL_LIFECYCLE
from om_prediction import api, store
from om_prediction.handlers import PredictionHandlers
from om_prediction.metrics import PredictionMetrics
from om_prediction.serving import ModelHolder
from om_prediction.settings import PredictionSettings
from om_runtime.cache import create_redis
from om_runtime.db import Database
from om_runtime.service import ServiceRuntime

MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger("om_prediction")


def create_app(settings: PredictionSettings | None = None) -> FastAPI:
    settings = settings or PredictionSettings()
    runtime = ServiceRuntime(settings)
    db = Database(
        settings.database_url,
        schema="prediction",
        migrations=MIGRATIONS,
        pool_size=settings.database_pool_size,
    )
    redis = create_redis(settings.redis_url)
    models = ModelHolder(settings.models_dir)
    runtime.add_resource(db, name="postgres", check=db.ping)
    runtime.add_resource(contextlib.aclosing(redis), name="redis", check=redis.ping)
    metrics = PredictionMetrics(runtime.registry)
    handlers = PredictionHandlers(redis, runtime.publisher, settings.cache_ttl_s, models, metrics)
    swap_lock = asyncio.Lock()

    async def swap_if_changed() -> None:
        async with swap_lock:
            if await asyncio.to_thread(models.refresh):
                async with db.transaction() as conn:
                    n = await handlers.rescore_open(conn)
                log.info("re-scored %d open markets with %s", n, models.version)

    @contextlib.asynccontextmanager
    async def loaded() -> AsyncIterator[None]:
        await asyncio.to_thread(models.refresh)  # the production model before the first message
        yield

    async def watch_registry() -> None:
        while True:
            await asyncio.sleep(settings.registry_poll_s)
            await swap_if_changed()

    async def publish_live_accuracy() -> None:
        """Each version's live Brier (and the price's) to /metrics and to the registry, which `om models` shows."""
        while True:
            await asyncio.sleep(settings.live_accuracy_every_s)
            async with db.transaction() as conn:
                live = await store.live_accuracy(conn)
            metrics.live(live)
            await asyncio.to_thread(models.registry.record_live_all, live)

    async def on_lifecycle(_event: object) -> None:
        await swap_if_changed()

    runtime.add_resource(loaded(), name="model", check=_always_ready)
    runtime.add_loop("registry-watch", watch_registry)
    runtime.add_loop("live-accuracy", publish_live_accuracy)
    runtime.consume_in_transaction(
        db, handlers.apply_batch, topics=(FEATURE_VECTORS, MARKET_LIFECYCLE), max_records=settings.max_batch
    )
    runtime.consume({MODEL_LIFECYCLE: on_lifecycle}, fanout=True)
    return runtime.create_app(
        title="Opinion Market prediction",
        description="Calibrated predictions of each market's outcome (internal).",
        routers=[api.router(db, redis, handlers, models)],
    )


async def _always_ready() -> None:
    return None
