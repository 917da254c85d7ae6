"""Wires analytics together: database, the consumed topics, the system-metrics loop, the internal API."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from om_analytics import api
from om_analytics.handlers import AnalyticsHandlers
from om_analytics.settings import AnalyticsSettings
from om_contracts.topics import MARKET_LIFECYCLE, MARKET_TRADES, PREDICTIONS
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
    runtime.add_resource(db, name="postgres", check=db.ping)
    handlers = AnalyticsHandlers(db, runtime.publisher, settings.top_markets)
    runtime.consume_in_transaction(
        db,
        handlers.apply_batch,
        topics=(MARKET_LIFECYCLE, MARKET_TRADES, PREDICTIONS),
        after_commit=handlers.changed.set,
    )
    runtime.add_loop(
        "system-metrics",
        lambda: handlers.publish_system_metrics(settings.system_interval_s, settings.system_heartbeat_s),
    )
    return runtime.create_app(
        title="Opinion Market analytics",
        description="Market, user and platform metrics (internal).",
        routers=[api.router(handlers)],
    )
