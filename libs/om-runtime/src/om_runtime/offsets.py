"""Consumed offsets and recently applied event ids, kept in the service's own schema next to its effects.

A consumer saves the next offset of each partition in the same transaction as the effects of the events before it,
so a redelivered batch is recognised by its offsets instead of by one row per event kept forever. Event ids are kept
only for a bounded window (`consumed_events`, pruned by age): they catch what offsets cannot — the same event
published twice under two offsets (a producer's retry, an outbox relay that crashed between publish and delete, a
replay), or a broker that lost its log and hands out old offsets again. The runtime creates both tables in every
service schema (`ensure_runtime_tables`); services' own migrations never do.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any

log = logging.getLogger(__name__)

#: A Kafka partition as (topic name, partition number).
Partition = tuple[str, int]

_DDL = """
CREATE TABLE IF NOT EXISTS consumer_offsets (
    consumer    text        NOT NULL,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    next_offset bigint      NOT NULL CHECK (next_offset >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, topic, partition)
);
CREATE TABLE IF NOT EXISTS consumed_events (
    event_id    uuid        PRIMARY KEY,
    consumed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS consumed_events_by_age ON consumed_events (consumed_at);
"""


def ensure_runtime_tables(conn: Any) -> None:
    """Create the runtime's tables in the connection's schema (sync psycopg connection, autocommit or not).

    A schema that still has the old `processed_events` table seeds the dedupe window from it once, so a service
    upgraded mid-stream does not apply again what it applied just before the upgrade."""
    fresh = conn.execute("SELECT to_regclass('consumed_events') IS NULL AS missing").fetchone()
    conn.execute(_DDL)
    missing = fresh["missing"] if isinstance(fresh, Mapping) else fresh[0]
    old = conn.execute("SELECT to_regclass('processed_events') IS NOT NULL AS present").fetchone()
    if missing and (old["present"] if isinstance(old, Mapping) else old[0]):
        conn.execute(
            "INSERT INTO consumed_events (event_id, consumed_at) "
            "SELECT event_id::uuid, processed_at FROM processed_events "
            "WHERE event_id ~ '^[0-9a-fA-F-]{36}$' ON CONFLICT DO NOTHING"
        )


async def load_offsets(conn: Any, consumer: str, partitions: Iterable[Partition]) -> dict[Partition, int]:
    """The saved next offset of each partition that has one (partitions never consumed are left out)."""
    wanted = list(partitions)
    if not wanted:
        return {}
    cur = await conn.execute(
        "SELECT topic, partition, next_offset FROM consumer_offsets "
        "WHERE consumer = %s AND (topic, partition) IN (SELECT * FROM unnest(%s::text[], %s::int[]))",
        (consumer, [t for t, _ in wanted], [p for _, p in wanted]),
    )
    return {
        (_get(row, "topic", 0), _get(row, "partition", 1)): _get(row, "next_offset", 2) for row in await cur.fetchall()
    }


async def save_offsets(conn: Any, consumer: str, offsets: Mapping[Partition, int]) -> None:
    """Upsert the next offset of each partition, in the caller's transaction."""
    if not offsets:
        return
    items = sorted(offsets.items())  # a fixed order: two transactions never wait on each other's rows in a cycle
    await conn.execute(
        "INSERT INTO consumer_offsets (consumer, topic, partition, next_offset) "
        "SELECT %s, t, p, o FROM unnest(%s::text[], %s::int[], %s::bigint[]) AS x(t, p, o) "
        "ON CONFLICT (consumer, topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()",
        (consumer, [t for (t, _), _ in items], [p for (_, p), _ in items], [o for _, o in items]),
    )


async def claim_events(conn: Any, event_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    """Record `event_ids` as applied, in the caller's transaction; return those not applied before (each once)."""
    if not event_ids:
        return set()
    cur = await conn.execute(
        "INSERT INTO consumed_events (event_id) SELECT unnest(%s::uuid[]) ON CONFLICT DO NOTHING RETURNING event_id",
        (list(event_ids),),
    )
    return {_get(row, "event_id", 0) for row in await cur.fetchall()}


async def prune_events(conn: Any, older_than: timedelta, *, limit: int = 50_000) -> int:
    """Forget applied event ids older than the dedupe window, at most `limit` per call; return how many."""
    cur = await conn.execute(
        "DELETE FROM consumed_events WHERE event_id IN ("
        "SELECT event_id FROM consumed_events WHERE consumed_at < now() - %s LIMIT %s)",
        (older_than, limit),
    )
    return cur.rowcount or 0


def _get(row: Any, name: str, index: int) -> Any:
    return row[name] if isinstance(row, Mapping) else row[index]
