"""SQL for ingest's own schema. Every function takes the connection of the caller's transaction."""

from __future__ import annotations

import json
from typing import Any

from opentelemetry import propagate
from psycopg import AsyncConnection
from pydantic import BaseModel

from om_contracts import Topic, encode, key_of
from om_ingest.domain import Market

MARKET_COLUMNS = (
    "market_id, question, category, status, created_at, close_at, current_price, last_trade_at, "
    "resolution, resolution_price"
)


def _market(row: dict[str, Any]) -> Market:
    return Market(**{k: row[k] for k in Market.__dataclass_fields__})


async def market_row(conn: AsyncConnection, market_id: str, *, for_update: bool = False) -> dict[str, Any] | None:
    lock = " FOR UPDATE" if for_update else ""
    # bandit: only module constants (column lists, a fixed lock clause) are interpolated; values are bound
    # nosemgrep: sql-built-from-request-values
    cur = await conn.execute(f"SELECT {MARKET_COLUMNS} FROM markets WHERE market_id = %s{lock}", (market_id,))  # nosec B608
    return await cur.fetchone()


async def lock_market(conn: AsyncConnection, market_id: str) -> Market | None:
    """Load a market and hold its row lock, so concurrent writes to one market apply one at a time."""
    row = await market_row(conn, market_id, for_update=True)
    return _market(row) if row else None


async def lock_markets(conn: AsyncConnection, market_ids: list[str]) -> dict[str, Market]:
    """Lock several markets, always in id order so two concurrent batches cannot deadlock."""
    cur = await conn.execute(
        # bandit: only module constants (column lists, a fixed lock clause) are interpolated; values are bound
        f"SELECT {MARKET_COLUMNS} FROM markets WHERE market_id = ANY(%s) ORDER BY market_id FOR UPDATE",  # nosec B608
        (market_ids,),
    )
    return {row["market_id"]: _market(row) for row in await cur.fetchall()}


async def list_markets(conn: AsyncConnection, status: str | None, limit: int, offset: int) -> list[dict[str, Any]]:
    cur = await conn.execute(
        # bandit: only module constants (column lists, a fixed lock clause) are interpolated; values are bound
        f"SELECT {MARKET_COLUMNS} FROM markets WHERE %(status)s::text IS NULL OR status = %(status)s "  # nosec B608
        "ORDER BY created_at DESC, market_id LIMIT %(limit)s OFFSET %(offset)s",
        {"status": status, "limit": limit, "offset": offset},
    )
    return await cur.fetchall()


async def insert_market(conn: AsyncConnection, m: dict[str, Any]) -> bool:
    cur = await conn.execute(
        "INSERT INTO markets (market_id, question, category, status, created_at, close_at, current_price) "
        "VALUES (%(market_id)s, %(question)s, %(category)s, 'open', %(created_at)s, %(close_at)s, %(initial_price)s) "
        "ON CONFLICT (market_id) DO NOTHING",
        m,
    )
    return cur.rowcount == 1


async def set_status(conn: AsyncConnection, market_id: str, status: str, **fields: Any) -> None:
    sets = ", ".join(["status = %(status)s", "updated_at = now()", *(f"{k} = %({k})s" for k in fields)])
    # Column names come from the callers' keyword arguments (code, never input); values are bound.
    await conn.execute(  # nosemgrep: sql-built-from-request-values
        f"UPDATE markets SET {sets} WHERE market_id = %(market_id)s",  # nosec B608
        {"market_id": market_id, "status": status, **fields},
    )


async def set_prices(conn: AsyncConnection, markets: list[Market]) -> None:
    async with conn.cursor() as cur:
        await cur.executemany(
            "UPDATE markets SET current_price = %s, last_trade_at = %s, updated_at = now() WHERE market_id = %s",
            [(m.current_price, m.last_trade_at, m.market_id) for m in markets],
        )


async def ensure_users(conn: AsyncConnection, first_seen: dict[str, Any]) -> None:
    await conn.execute(
        "INSERT INTO users (user_id, first_seen_at) SELECT * FROM unnest(%s::text[], %s::timestamptz[]) "
        "ON CONFLICT (user_id) DO NOTHING",
        (list(first_seen), list(first_seen.values())),
    )


TRADE_COLUMNS = "trade_id, market_id, user_id, outcome, side, amount, shares, price_before, price_after, executed_at"


async def trades_by_id(conn: AsyncConnection, trade_ids: list[str]) -> dict[str, dict[str, Any]]:
    # bandit: only module constants (column lists, a fixed lock clause) are interpolated; values are bound
    cur = await conn.execute(f"SELECT {TRADE_COLUMNS} FROM trades WHERE trade_id = ANY(%s)", (trade_ids,))  # nosec B608
    return {row["trade_id"]: row for row in await cur.fetchall()}


async def insert_trades(conn: AsyncConnection, trades: list[dict[str, Any]]) -> None:
    async with conn.cursor() as cur:
        await cur.executemany(
            # bandit: only module constants (column lists, a fixed lock clause) are interpolated; values are bound
            f"INSERT INTO trades ({TRADE_COLUMNS}) VALUES (%(trade_id)s, %(market_id)s, %(user_id)s, %(outcome)s, "  # nosec B608
            "%(side)s, %(amount)s, %(shares)s, %(price_before)s, %(price_after)s, %(executed_at)s)",
            trades,
        )


async def recent_trades(conn: AsyncConnection, market_id: str, limit: int) -> list[dict[str, Any]]:
    cur = await conn.execute(
        # bandit: only module constants (column lists, a fixed lock clause) are interpolated; values are bound
        f"SELECT {TRADE_COLUMNS} FROM trades WHERE market_id = %s ORDER BY executed_at DESC LIMIT %s",  # nosec B608
        (market_id, limit),
    )
    return await cur.fetchall()


async def signal_row(conn: AsyncConnection, signal_id: str) -> dict[str, Any] | None:
    cur = await conn.execute(
        "SELECT signal_id, market_id, kind, source, text, sentiment, observed_at FROM signals WHERE signal_id = %s",
        (signal_id,),
    )
    return await cur.fetchone()


async def insert_signal(conn: AsyncConnection, s: dict[str, Any]) -> bool:
    cur = await conn.execute(
        "INSERT INTO signals (signal_id, market_id, kind, source, text, sentiment, observed_at) "
        "VALUES (%(signal_id)s, %(market_id)s, %(kind)s, %(source)s, %(text)s, %(sentiment)s, %(observed_at)s) "
        "ON CONFLICT (signal_id) DO NOTHING",
        s,
    )
    return cur.rowcount == 1


async def enqueue(conn: AsyncConnection, topic: Topic, *events: BaseModel) -> None:
    """Write events to the outbox in the caller's transaction, with the current trace context, and wake
    the relay (PostgreSQL delivers the notification only if the transaction commits)."""
    trace: dict[str, str] = {}
    propagate.inject(trace)
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO outbox (topic, key, payload, headers) VALUES (%s, %s, %s, %s)",
            [
                (topic.name, key_of(topic, e).decode(), encode(e), json.dumps({**trace, "event_type": e.event_type}))
                for e in events
            ],
        )
    await conn.execute("SELECT pg_notify('ingest_outbox', '')")
