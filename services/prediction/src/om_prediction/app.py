"""Wires prediction together: database, Redis cache, the feature-vector consumer, the internal API."""

from __future__ import annotations

import contextlib
from pathlib import Path

from fastapi import FastAPI

from om_contracts.topics import FEATURE_VECTORS
from om_prediction import api
from om_prediction.handlers import PredictionHandlers
from om_prediction.settings import PredictionSettings
from om_runtime.cache import create_redis
from om_runtime.db import Database
from om_runtime.service import ServiceRuntime

MIGRATIONS = Path(__file__).parent / "migrations"


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
    runtime.add_resource(db, name="postgres", check=db.ping)
    runtime.add_resource(contextlib.aclosing(redis), name="redis", check=redis.ping)
    handlers = PredictionHandlers(redis, runtime.publisher, settings.cache_ttl_s)
    runtime.consume_in_transaction(db, handlers.apply_batch, topics=(FEATURE_VECTORS,))
    return runtime.create_app(
        title="Opinion Market prediction",
        description="Calibrated predictions of each market's outcome (internal).",
        routers=[api.router(db, redis)],
    )
