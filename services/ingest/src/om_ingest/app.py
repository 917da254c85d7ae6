"""Wires ingest together: database, outbox relay, HTTP API."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from om_ingest import api
from om_ingest.commands import Ingest
from om_ingest.domain import DomainError
from om_ingest.outbox import relay
from om_ingest.settings import IngestSettings
from om_runtime.db import Database
from om_runtime.service import ServiceRuntime

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: IngestSettings | None = None) -> FastAPI:
    settings = settings or IngestSettings()
    runtime = ServiceRuntime(settings)
    db = Database(settings.database_url, schema="ingest", migrations=MIGRATIONS, pool_size=settings.database_pool_size)
    runtime.add_resource(db, name="postgres", check=db.ping)
    runtime.add_loop(
        "outbox-relay",
        lambda: relay(
            db,
            runtime.publisher,
            batch_size=settings.outbox_batch_size,
            poll_interval_s=settings.outbox_poll_interval_s,
        ),
    )
    app = runtime.create_app(
        title="Opinion Market ingest",
        description="Internal API of the system of record: markets, trades, signals.",
        routers=[api.router(Ingest(db))],
    )
    app.add_exception_handler(DomainError, api.domain_error_response)
    return app
