"""om_runtime.offsets on a real PostgreSQL: saved offsets round-trip per consumer, event ids are claimed once and
forgotten after the window, and an old `processed_events` table seeds the window once."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from om_runtime.db import migrate
from om_runtime.offsets import claim_events, ensure_runtime_tables, load_offsets, prune_events, save_offsets

pytestmark = pytest.mark.integration


async def test_offsets_round_trip_per_consumer_and_partition(database_url: str) -> None:
    with psycopg.connect(database_url, row_factory=dict_row) as sync:
        ensure_runtime_tables(sync)
    async with await psycopg.AsyncConnection.connect(database_url, row_factory=dict_row) as conn:
        await save_offsets(conn, "feature", {("t", 0): 5, ("t", 2): 9, ("u", 0): 1})
        await save_offsets(conn, "feature", {("t", 0): 7})
        await save_offsets(conn, "analytics", {("t", 0): 100})
        assert await load_offsets(conn, "feature", [("t", 0), ("t", 1), ("t", 2)]) == {("t", 0): 7, ("t", 2): 9}
        assert await load_offsets(conn, "analytics", [("t", 0), ("u", 0)]) == {("t", 0): 100}
        assert await load_offsets(conn, "feature", []) == {}


async def test_event_ids_are_claimed_once_and_pruned_after_the_window(database_url: str) -> None:
    with psycopg.connect(database_url, row_factory=dict_row) as sync:
        ensure_runtime_tables(sync)
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with await psycopg.AsyncConnection.connect(database_url, row_factory=dict_row, autocommit=True) as conn:
        assert await claim_events(conn, [a, b, a]) == {a, b}
        assert await claim_events(conn, [b, c]) == {c}
        await conn.execute(
            "UPDATE consumed_events SET consumed_at = now() - interval '2 days' WHERE event_id = %s", (a,)
        )
        assert await prune_events(conn, timedelta(days=1)) == 1
        assert await claim_events(conn, [a, b]) == {a}  # forgotten, so new again; b still remembered


def test_the_old_processed_events_table_seeds_the_window_once(database_url: str) -> None:
    old = uuid.uuid4()
    with psycopg.connect(database_url, row_factory=dict_row, autocommit=True) as conn:
        conn.execute("CREATE TABLE processed_events (event_id text PRIMARY KEY, processed_at timestamptz NOT NULL)")
        conn.execute("INSERT INTO processed_events VALUES (%s, now()), ('not-a-uuid', now())", (str(old),))
        ensure_runtime_tables(conn)
        ensure_runtime_tables(conn)  # idempotent
        rows = conn.execute("SELECT event_id FROM consumed_events").fetchall()
    assert rows == [{"event_id": old}]


def test_replicas_migrating_the_same_new_schema_at_once_all_succeed(database_url: str, tmp_path: Path) -> None:
    """Replicas start together: each creates the schema if missing and applies the migrations once between them."""
    (tmp_path / "0001_init.sql").write_text("CREATE TABLE things (id int PRIMARY KEY);\n")
    schema = f"race_{uuid.uuid4().hex[:8]}"
    with ThreadPoolExecutor(4) as pool:
        applied = list(pool.map(lambda _: migrate(database_url, schema, tmp_path), range(4)))
    assert sorted(applied) == [0, 0, 0, 1]
    with psycopg.connect(database_url) as conn:
        assert conn.execute(f"SELECT count(*) FROM {schema}.things").fetchone() == (0,)  # noqa: S608  # nosec B608  # a generated identifier
