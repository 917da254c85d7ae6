"""Retention against real PostgreSQL: rows older than their retention (relative to the clock) are pruned, newer
ones and day buckets stay, and so do minutes not rolled up into their hours yet."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from om_analytics import store
from om_analytics.app import MIGRATIONS
from om_runtime.db import Database

pytestmark = pytest.mark.integration

AS_OF = datetime(2025, 6, 15, 12, 0, tzinfo=UTC)


async def test_prune_keeps_each_resolution_for_its_retention(database_url: str) -> None:
    async with Database(database_url, schema="analytics", migrations=MIGRATIONS, pool_size=1) as db:
        async with db.transaction() as conn:
            for resolution, age in (("1m", 9), ("1m", 7), ("1h", 91), ("1h", 89), ("1d", 400)):
                await conn.execute(
                    "INSERT INTO buckets (market_id, resolution, start, volume, trades) VALUES ('m', %s, %s, 1, 1)",
                    (resolution, AS_OF - timedelta(days=age)),
                )
            for age in (31, 29):
                await conn.execute(
                    "INSERT INTO trades (trade_id, executed_at) VALUES (%s, %s)",
                    (f"t{age}", AS_OF - timedelta(days=age)),
                )
            retention = {"1m": timedelta(days=8), "1h": timedelta(days=90), "trades": timedelta(days=30)}
            # Minutes not rolled up into their hour yet stay, however old: here the 9-day-old one.
            await conn.execute("UPDATE clock SET rolled_through = %s", (AS_OF - timedelta(days=10),))
            not_rolled = await store.prune(conn, AS_OF, retention)
            minutes = await (await conn.execute("SELECT count(*) AS n FROM buckets WHERE resolution = '1m'")).fetchone()
            await conn.execute("UPDATE clock SET rolled_through = %s", (AS_OF,))
            deleted = not_rolled + await store.prune(conn, AS_OF, retention)
            kept = await (
                await conn.execute("SELECT resolution, start FROM buckets ORDER BY resolution, start")
            ).fetchall()
            trades = await (await conn.execute("SELECT trade_id FROM trades")).fetchall()
    assert minutes is not None and minutes["n"] == 2 and not_rolled == 2  # an hour bucket and a trade went
    assert deleted == 3
    assert [(r["resolution"], (AS_OF - r["start"]).days) for r in kept] == [("1d", 400), ("1h", 89), ("1m", 7)]
    assert [r["trade_id"] for r in trades] == ["t29"]
