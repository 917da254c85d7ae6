"""Wires ingest together: database (and an optional read replica), outbox relay, HTTP API."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError

from om_contracts import utcnow
from om_ingest import api, store
from om_ingest.commands import Ingest
from om_ingest.domain import DomainError
from om_ingest.outbox import relay
from om_ingest.readdb import ReadDatabase
from om_ingest.settings import IngestSettings
from om_runtime.db import Database
from om_runtime.service import ServiceRuntime

MIGRATIONS = Path(__file__).parent / "migrations"
EXPIRY_SWEEP_S = 600.0


def create_app(settings: IngestSettings | None = None) -> FastAPI:
    settings = settings or IngestSettings()
    runtime = ServiceRuntime(settings)
    db = Database(settings.database_url, schema="ingest", migrations=MIGRATIONS, pool_size=settings.database_pool_size)
    runtime.add_resource(db, name="postgres", check=db.ping)
    read_db = None
    if settings.database_read_url:
        read_db = ReadDatabase(settings.database_read_url, schema="ingest", pool_size=settings.database_pool_size)
        runtime.add_resource(read_db, name="postgres-read", check=read_db.ping)
    runtime.add_loop(
        "outbox-relay",
        lambda: relay(
            db,
            runtime.publisher,
            batch_size=settings.outbox_batch_size,
            poll_interval_s=settings.outbox_poll_interval_s,
        ),
    )
    runtime.add_loop("idempotency-expiry", lambda: forget_expired_keys(db))
    ingest = Ingest(
        db,
        max_future_skew=timedelta(seconds=settings.max_future_skew_s),
        idempotency_ttl=timedelta(seconds=settings.idempotency_ttl_s),
    )
    app = runtime.create_app(
        title="Opinion Market ingest",
        description="Internal API of the system of record: markets, trades, signals.",
        routers=[api.router(ingest, read_db)],
    )
    app.add_exception_handler(DomainError, api.domain_error_response)
    app.add_exception_handler(RequestValidationError, api.validation_error_response)
    return app


async def forget_expired_keys(db: Database) -> None:
    """Delete expired Idempotency-Keys now and then (a claim also forgets its own key once expired)."""
    while True:
        async with db.transaction() as conn:
            await store.forget_expired_idempotency_keys(conn, utcnow())
        await asyncio.sleep(EXPIRY_SWEEP_S)
