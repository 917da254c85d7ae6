"""Hour and day candles rolled up from minute buckets against real PostgreSQL, on a hand-computed market: the
same candles before and after the roll-up, a late trade (its hour already rolled up) counted once, and the
stored 1h/1d rows equal to the hand-computed ones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from om_analytics import store
from om_analytics.app import MIGRATIONS
from om_contracts import TradeExecuted
from om_runtime.db import Database

pytestmark = pytest.mark.integration

DAY = datetime(2025, 6, 15, tzinfo=UTC)


def trade(hh: int, mm: int, price: float, amount: float, trade_id: str) -> TradeExecuted:
    return TradeExecuted(
        occurred_at=DAY + timedelta(hours=hh, minutes=mm), producer="t", trade_id=trade_id, market_id="m",
        user_id="u", outcome="YES", side="BUY", amount=amount, shares=1.0, price_before=0.5, price_after=price,
    )  # fmt: skip


async def apply(db: Database, trades: list[TradeExecuted]) -> None:
    """What a batch does to buckets: take the clock (and the roll-up boundary), then merge the trades."""
    async with db.transaction() as conn:
        rolled_through = await store.start_batch(conn, max(t.occurred_at for t in trades))
        await store.record_buckets(conn, trades, rolled_through)


def ohlcv(buckets: dict[datetime, Any]) -> list[tuple[Any, ...]]:
    return [
        (start.strftime("%d %H:%M"), b.open, b.high, b.low, b.close, b.volume, b.trades)
        for start, b in sorted(buckets.items())
    ]


async def candles(db: Database, resolution: str) -> list[tuple[Any, ...]]:
    async with db.transaction() as conn:
        return ohlcv(await store.market_buckets(conn, "m", resolution, DAY, DAY + timedelta(days=1)))


async def stored(db: Database, resolution: str) -> list[tuple[Any, ...]]:
    async with db.transaction() as conn:
        cur = await conn.execute("SELECT * FROM buckets WHERE resolution = %s ORDER BY start", (resolution,))
        return [
            (r["start"].strftime("%d %H:%M"), r["open"], r["high"], r["low"], r["close"], r["volume"], r["trades"])
            for r in await cur.fetchall()
        ]


async def roll_up(db: Database) -> int:
    async with db.transaction() as conn:
        return await store.roll_up(conn)


async def test_hours_and_days_roll_up_from_minutes_and_late_trades_count_once(database_url: str) -> None:
    async with Database(database_url, schema="analytics", migrations=MIGRATIONS, pool_size=1) as db:
        await apply(db, [
            trade(10, 5, 0.50, 10.0, "a"), trade(10, 40, 0.60, 20.0, "b"), trade(11, 10, 0.55, 5.0, "c"),
            trade(12, 30, 0.70, 1.0, "d"),
        ])  # fmt: skip
        hours = [
            ("15 10:00", 0.50, 0.60, 0.50, 0.60, 30.0, 2),
            ("15 11:00", 0.55, 0.55, 0.55, 0.55, 5.0, 1),
            ("15 12:00", 0.70, 0.70, 0.70, 0.70, 1.0, 1),
        ]
        day = [("15 00:00", 0.50, 0.70, 0.50, 0.70, 36.0, 4)]
        # Nothing rolled up yet: every candle comes from the minutes, and no hour or day is stored.
        assert await stored(db, "1h") == [] and await stored(db, "1d") == []
        assert await candles(db, "1h") == hours and await candles(db, "1d") == day

        # The clock is in hour 12: hours 10 and 11 are over and rolled up; the day holds them so far.
        assert await roll_up(db) == 2
        assert await stored(db, "1h") == hours[:2]
        assert await stored(db, "1d") == [("15 00:00", 0.50, 0.60, 0.50, 0.55, 35.0, 3)]
        assert await candles(db, "1h") == hours and await candles(db, "1d") == day
        assert await roll_up(db) == 0  # hour 12 is not over

        # A late trade in hour 10 (rolled up already) goes straight to its hour and day; one at 12:45 does not.
        await apply(db, [trade(10, 20, 0.40, 4.0, "e"), trade(12, 45, 0.65, 2.0, "f")])
        hours = [
            ("15 10:00", 0.50, 0.60, 0.40, 0.60, 34.0, 3),
            ("15 11:00", 0.55, 0.55, 0.55, 0.55, 5.0, 1),
            ("15 12:00", 0.70, 0.70, 0.65, 0.65, 3.0, 2),
        ]
        day = [("15 00:00", 0.50, 0.70, 0.40, 0.65, 42.0, 6)]
        assert await stored(db, "1h") == hours[:2]
        assert await candles(db, "1h") == hours and await candles(db, "1d") == day

        # A trade at 13:01 moves the clock past hour 12, which is then rolled up too: stored rows equal the hand
        # computation, each trade counted once.
        await apply(db, [trade(13, 1, 0.80, 1.0, "g")])
        assert await roll_up(db) == 1
        assert await stored(db, "1h") == hours
        assert await stored(db, "1d") == day
        assert await candles(db, "1d") == [("15 00:00", 0.50, 0.80, 0.40, 0.80, 43.0, 7)]
