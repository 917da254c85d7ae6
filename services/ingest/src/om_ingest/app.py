"""Wires ingest together: database (and an optional read replica for queries), outbox relay, HTTP API."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError

from om_contracts import utcnow
from om_contracts.topics import MARKET_LIFECYCLE, MARKET_SIGNALS, MARKET_TRADES
from om_ingest import api, store
from om_ingest.commands import Ingest
from om_ingest.domain import DomainError
from om_ingest.intake import RAW_TOPICS, RawIntake
from om_ingest.outbox import LogWatch, relay
from om_ingest.settings import IngestSettings
from om_runtime.db import Database, StoredOffsets
from om_runtime.kafka import ensure_topics
from om_runtime.service import ServiceRuntime

MIGRATIONS = Path(__file__).parent / "migrations"
EXPIRY_SWEEP_S = 600.0
#: Raw-topic records per transaction under a backlog: each batch also waits for Kafka to confirm its outbox events,
#: so larger batches share that wait (`make bench-ingest`, quiet machine: 500 gave 10,541 and 11,590 trades/s,
#: 2,000 gave 13,602 and 14,724).
RAW_MAX_BATCH = 2000
#: The topics the outbox publishes to (re-created if the broker lost them).
PRODUCED = (MARKET_LIFECYCLE, MARKET_TRADES, MARKET_SIGNALS)


def create_app(settings: IngestSettings | None = None) -> FastAPI:
    settings = settings or IngestSettings()
    # Kafka is not needed to take writes (the outbox keeps the events): start and stay ready without it.
    runtime = ServiceRuntime(settings, kafka_required=False)
    db = Database(
        settings.database_url,
        schema="ingest",
        migrations=MIGRATIONS,
        pool_size=settings.database_pool_size,
        read_url=settings.database_read_url,
    )
    runtime.add_resource(db, name="postgres", check=db.ping)
    runtime.add_loop(
        "outbox-relay",
        lambda: relay(
            db,
            runtime.publisher,
            batch_size=settings.outbox_batch_size,
            poll_interval_s=settings.outbox_poll_interval_s,
            shards=settings.outbox_relays,
            confirm_timeout_s=settings.outbox_confirm_timeout_s,
            after_failure=lambda: ensure_topics(
                settings.kafka_bootstrap_servers, PRODUCED, replication_factor=settings.kafka_replication_factor
            ),
            watch=LogWatch(
                db,
                settings.kafka_bootstrap_servers,
                timedelta(seconds=settings.outbox_retention_s),
                timeout_s=settings.outbox_confirm_timeout_s,
            ),
            log_check_s=settings.outbox_log_check_s,
        ),
    )
    runtime.add_loop("idempotency-expiry", lambda: forget_expired_keys(db))
    ingest = Ingest(
        db,
        max_future_skew=timedelta(seconds=settings.max_future_skew_s),
        idempotency_ttl=timedelta(seconds=settings.idempotency_ttl_s),
    )
    if settings.raw_intake:
        intake = RawIntake(ingest, runtime.publisher, consumer=settings.service_name)
        runtime.consume_stateful(
            intake,
            topics=RAW_TOPICS,
            listener=StoredOffsets(db, settings.service_name),
            max_records=RAW_MAX_BATCH,
            pipelined=settings.raw_pipelined,
        )
        # Raw producers write in bulk: an idle raw topic need not be polled every KAFKA_FETCH_MAX_WAIT_MS (the
        # runtime's consume_stateful takes no per-consumer wait; the consumer reads it when it connects).
        runtime.consumers[-1].fetch_max_wait_ms = settings.raw_fetch_max_wait_ms
    app = runtime.create_app(
        title="Opinion Market ingest",
        description="Internal API of the system of record: markets, trades, signals.",
        routers=[api.router(ingest)],
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
