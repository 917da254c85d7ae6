"""The outbox relay: publishes events that committed transactions wrote to the `outbox` table, then deletes them.

A write and its event commit together, so an event is never published for a rolled-back write nor lost for a
committed one. Publishing is at-least-once (a crash between publish and delete republishes the same event id,
which consumers dedupe). One relay runs at a time (an advisory lock), which keeps each market's events in order.
"""

from __future__ import annotations

import logging

import psycopg
from opentelemetry import propagate, trace

from om_runtime.db import Database
from om_runtime.kafka import EventPublisher

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

CHANNEL = "ingest_outbox"
RELAY_LOCK_ID = 0x6F6D_0001  # any constant; one per relay kind


async def publish_pending(db: Database, publisher: EventPublisher, batch_size: int) -> int:
    """Publish up to `batch_size` outbox events in id order; return how many were published."""
    async with db.transaction() as conn:
        cur = await conn.execute("SELECT pg_try_advisory_xact_lock(%s) AS leader", (RELAY_LOCK_ID,))
        if not (await cur.fetchone())["leader"]:
            return 0
        cur = await conn.execute(
            "SELECT id, topic, key, payload, headers FROM outbox ORDER BY id LIMIT %s", (batch_size,)
        )
        rows = await cur.fetchall()
        async with publisher.confirmed_together():
            for row in rows:
                # Continue the trace of the request that wrote the event.
                with tracer.start_as_current_span("outbox relay", context=propagate.extract(row["headers"])):
                    headers = {"content-type": "application/json", "event_type": row["headers"]["event_type"]}
                    await publisher.publish_bytes(
                        row["topic"], bytes(row["payload"]), key=row["key"].encode(), headers=headers
                    )
        if rows:
            await conn.execute("DELETE FROM outbox WHERE id = ANY(%s)", ([r["id"] for r in rows],))
        return len(rows)


async def relay(db: Database, publisher: EventPublisher, *, batch_size: int, poll_interval_s: float) -> None:
    """Publish forever: woken by NOTIFY from writers, and polling in case a notification was missed."""
    async with await psycopg.AsyncConnection.connect(db.url, autocommit=True) as listener:
        await listener.execute(f"LISTEN {CHANNEL}")
        while True:
            if await publish_pending(db, publisher, batch_size) < batch_size:
                async for _ in listener.notifies(timeout=poll_interval_s, stop_after=1):
                    pass
