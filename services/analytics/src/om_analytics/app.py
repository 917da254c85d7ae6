"""Wires analytics together: database, Redis, the consumed topics, the leader loop, the internal API."""

from __future__ import annotations

import contextlib
from pathlib import Path

from fastapi import FastAPI

from om_analytics import api
from om_analytics.handlers import AnalyticsHandlers
from om_analytics.hot import HotModels
from om_analytics.settings import AnalyticsSettings
from om_contracts.topics import MARKET_LIFECYCLE, MARKET_SIGNALS, MARKET_TRADES, PREDICTIONS
from om_runtime.cache import create_redis
from om_runtime.db import Database
from om_runtime.service import ServiceRuntime

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: AnalyticsSettings | None = None) -> FastAPI:
    settings = settings or AnalyticsSettings()
    runtime = ServiceRuntime(settings)
    db = Database(
        settings.database_url,
        schema="analytics",
        migrations=MIGRATIONS,
        pool_size=settings.database_pool_size,
    )
    redis = create_redis(settings.redis_url)
    runtime.add_resource(db, name="postgres", check=db.ping)
    runtime.add_resource(contextlib.aclosing(redis), name="redis", check=redis.ping)
    handlers = AnalyticsHandlers(
        db, runtime.publisher, HotModels(redis, settings.redis_prefix), settings, registry=runtime.registry
    )
    runtime.consume_in_transaction(
        db,
        handlers.apply_batch,
        topics=(MARKET_LIFECYCLE, MARKET_TRADES, MARKET_SIGNALS, PREDICTIONS),
        after_commit=handlers.after_commit,
        max_records=settings.max_batch,
    )
    runtime.add_loop("leader", handlers.lead)
    runtime.add_loop("snapshots", handlers.snapshot_changes)
    runtime.add_loop("user-snapshots", handlers.snapshot_users)
    runtime.add_loop("health", handlers.report_health)
    app = runtime.create_app(
        title="Opinion Market analytics",
        description="Market, user and platform metrics, trends, calibration and insights (internal).",
        routers=[api.router(handlers)],
    )
    app.state.analytics = handlers
    return app
