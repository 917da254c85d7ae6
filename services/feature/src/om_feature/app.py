"""Wires feature together: database, Redis, the three consumed topics, the internal API."""

from __future__ import annotations

import contextlib
from pathlib import Path

from fastapi import FastAPI

from om_contracts.topics import MARKET_LIFECYCLE, MARKET_SIGNALS, MARKET_TRADES
from om_feature import api
from om_feature.handlers import FeatureHandlers
from om_feature.settings import FeatureSettings
from om_runtime.cache import create_redis
from om_runtime.db import Database
from om_runtime.service import ServiceRuntime

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: FeatureSettings | None = None) -> FastAPI:
    settings = settings or FeatureSettings()
    runtime = ServiceRuntime(settings)
    db = Database(settings.database_url, schema="feature", migrations=MIGRATIONS, pool_size=settings.database_pool_size)
    redis = create_redis(settings.redis_url)
    runtime.add_resource(db, name="postgres", check=db.ping)
    runtime.add_resource(contextlib.aclosing(redis), name="redis", check=redis.ping)
    handlers = FeatureHandlers(redis, runtime.publisher)
    runtime.consume_in_transaction(db, handlers.apply_batch, topics=(MARKET_LIFECYCLE, MARKET_TRADES, MARKET_SIGNALS))
    return runtime.create_app(
        title="Opinion Market feature",
        description="Streaming per-market features (internal).",
        routers=[api.router(redis)],
    )
