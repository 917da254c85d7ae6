"""SQL for ingest's own schema. Every function takes the connection of the caller's transaction."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from itertools import groupby
from typing import Any

from opentelemetry import propagate
from psycopg import AsyncConnection
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from om_contracts import Topic, encode, key_of
from om_contracts.envelope import Envelope
from om_ingest.domain import Market

#: A connection of ingest's pool (om_runtime's Database), whose rows are dicts.
Conn = AsyncConnection[DictRow]

MARKET_COLUMNS = (
    "market_id, question, category, status, created_at, close_at, current_price, last_trade_at, "
    "resolution, resolution_price"
)


def _market(row: dict[str, Any]) -> Market:
    return Market(**{k: row[k] for k in Market.__dataclass_fields__})


async def market_row(conn: Conn, market_id: str, *, for_update: bool = False) -> dict[str, Any] | None:
    lock = " FOR UPDATE" if for_update else ""
    # bandit: only module constants (column lists, a fixed lock clause) are interpolated; values are bound
    # nosemgrep: sql-built-from-request-values
    cur = await conn.execute(f"SELECT {MARKET_COLUMNS} FROM markets WHERE market_id = %s{lock}", (market_id,))  # nosec B608
    return await cur.fetchone()


async def written_market(conn: Conn, market_id: str) -> dict[str, Any]:
    """A market this transaction has just written or locked (so it exists)."""
    row = await market_row(conn, market_id)
    if row is None:
        raise LookupError(f"market {market_id!r} vanished inside its own transaction")
    return row


async def lock_market(conn: Conn, market_id: str) -> Market | None:
    """Load a market and hold its row lock, so concurrent writes to one market apply one at a time."""
    row = await market_row(conn, market_id, for_update=True)
    return _market(row) if row else None


async def lock_markets(conn: Conn, market_ids: list[str]) -> dict[str, Market]:
    """Lock several markets, always in id order so two concurrent batches cannot deadlock."""
    cur = await conn.execute(
        # bandit: only module constants (column lists, a fixed lock clause) are interpolated; values are bound
        f"SELECT {MARKET_COLUMNS} FROM markets WHERE market_id = ANY(%s) ORDER BY market_id FOR UPDATE",  # nosec B608
        (market_ids,),
    )
    return {row["market_id"]: _market(row) for row in await cur.fetchall()}


async def list_markets(conn: Conn, status: str | None, limit: int, offset: int) -> list[dict[str, Any]]:
    cur = await conn.execute(
        # bandit: only module constants (column lists, a fixed lock clause) are interpolated; values are bound
        f"SELECT {MARKET_COLUMNS} FROM markets WHERE %(status)s::text IS NULL OR status = %(status)s "  # nosec B608
        "ORDER BY created_at DESC, market_id LIMIT %(limit)s OFFSET %(offset)s",
        {"status": status, "limit": limit, "offset": offset},
    )
    return await cur.fetchall()


async def insert_market(conn: Conn, m: dict[str, Any]) -> bool:
    cur = await conn.execute(
        "INSERT INTO markets (market_id, question, category, status, created_at, close_at, current_price) "
        "VALUES (%(market_id)s, %(question)s, %(category)s, 'open', %(created_at)s, %(close_at)s, %(initial_price)s) "
        "ON CONFLICT (market_id) DO NOTHING",
        m,
    )
    return cur.rowcount == 1


async def set_status(conn: Conn, market_id: str, status: str, **fields: Any) -> None:
    sets = ", ".join(["status = %(status)s", "updated_at = now()", *(f"{k} = %({k})s" for k in fields)])
    # Column names come from the callers' keyword arguments (code, never input); values are bound.
    await conn.execute(  # nosemgrep: sql-built-from-request-values
        f"UPDATE markets SET {sets} WHERE market_id = %(market_id)s",  # nosec B608
        {"market_id": market_id, "status": status, **fields},
    )


async def set_prices(conn: Conn, markets: list[Market]) -> None:
    """Move several markets' prices in one statement (a batch spread over many markets would otherwise cost one
    UPDATE per market)."""
    await conn.execute(
        "UPDATE markets SET current_price = p.price, last_trade_at = p.at, updated_at = now() "
        "FROM unnest(%b::text[], %b::float8[], %b::timestamptz[]) AS p(market_id, price, at) "
        "WHERE markets.market_id = p.market_id",
        ([m.market_id for m in markets], [m.current_price for m in markets], [m.last_trade_at for m in markets]),
    )


async def ensure_users(conn: Conn, first_seen: dict[str, Any]) -> None:
    # In id order: two batches inserting overlapping new users then take the unique-index locks in the same
    # order, so one waits for the other instead of deadlocking (which PostgreSQL would end with an error).
    users = sorted(first_seen.items())
    await conn.execute(
        "INSERT INTO users (user_id, first_seen_at) SELECT * FROM unnest(%b::text[], %b::timestamptz[]) "
        "ON CONFLICT (user_id) DO NOTHING",
        ([user for user, _ in users], [seen for _, seen in users]),
    )


TRADE_COLUMNS = (
    "trade_id, market_id, user_id, outcome, side, amount, shares, price_before, price_after, executed_at, "
    "amount_estimated"
)


async def trades_by_id(conn: Conn, trade_ids: list[str]) -> dict[str, dict[str, Any]]:
    if not trade_ids:
        return {}
    # bandit: only the module's column list is interpolated; the ids are bound
    query = f"SELECT {TRADE_COLUMNS} FROM trades WHERE trade_id = ANY(%b)"  # nosec B608
    cur = await conn.execute(query, (trade_ids,))
    return {row["trade_id"]: row for row in await cur.fetchall()}


async def insert_trades(conn: Conn, trades: list[dict[str, Any]]) -> int:
    """Insert trades in one statement (one array per column); return how many were new. An id that a
    concurrent transaction just recorded is skipped (that transaction is waited for, not failed against)."""
    columns = [c.strip() for c in TRADE_COLUMNS.split(",")]
    types = {
        "amount": "float8",
        "shares": "float8",
        "price_before": "float8",
        "price_after": "float8",
        "executed_at": "timestamptz",
        "amount_estimated": "bool",
    }
    arrays = ", ".join(f"%b::{types.get(c, 'text')}[]" for c in columns)  # %b: binary, no per-element quoting
    # bandit: only the module's column list and fixed type casts are interpolated; the values are bound
    query = f"INSERT INTO trades ({TRADE_COLUMNS}) SELECT * FROM unnest({arrays}) ON CONFLICT (trade_id) DO NOTHING"  # nosec B608
    cur = await conn.execute(query, [[t[c] for t in trades] for c in columns])
    return cur.rowcount


async def recent_trades(conn: Conn, market_id: str, limit: int) -> list[dict[str, Any]]:
    cur = await conn.execute(
        # bandit: only module constants (column lists, a fixed lock clause) are interpolated; values are bound
        f"SELECT {TRADE_COLUMNS} FROM trades WHERE market_id = %s ORDER BY executed_at DESC LIMIT %s",  # nosec B608
        (market_id, limit),
    )
    return await cur.fetchall()


async def signal_row(conn: Conn, signal_id: str) -> dict[str, Any] | None:
    cur = await conn.execute(
        "SELECT signal_id, market_id, kind, source, text, sentiment, observed_at FROM signals WHERE signal_id = %s",
        (signal_id,),
    )
    return await cur.fetchone()


SIGNAL_COLUMNS = "signal_id, market_id, kind, source, text, sentiment, observed_at"


async def signals_by_id(conn: Conn, signal_ids: list[str]) -> dict[str, dict[str, Any]]:
    if not signal_ids:
        return {}
    # bandit: only the module's column list is interpolated; the ids are bound
    query = f"SELECT {SIGNAL_COLUMNS} FROM signals WHERE signal_id = ANY(%b)"  # nosec B608
    cur = await conn.execute(query, (signal_ids,))
    return {row["signal_id"]: row for row in await cur.fetchall()}


async def insert_signals(conn: Conn, signals: list[dict[str, Any]]) -> int:
    """Insert signals in one statement (one array per column); return how many were new (as `insert_trades`)."""
    columns = [c.strip() for c in SIGNAL_COLUMNS.split(",")]
    types = {"sentiment": "float8", "observed_at": "timestamptz"}
    arrays = ", ".join(f"%b::{types.get(c, 'text')}[]" for c in columns)  # %b: binary, no per-element quoting
    # bandit: only the module's column list and fixed type casts are interpolated; the values are bound
    query = f"INSERT INTO signals ({SIGNAL_COLUMNS}) SELECT * FROM unnest({arrays}) ON CONFLICT (signal_id) DO NOTHING"  # nosec B608
    cur = await conn.execute(query, [[s[c] for s in signals] for c in columns])
    return cur.rowcount


async def insert_signal(conn: Conn, s: dict[str, Any]) -> bool:
    cur = await conn.execute(
        "INSERT INTO signals (signal_id, market_id, kind, source, text, sentiment, observed_at) "
        "VALUES (%(signal_id)s, %(market_id)s, %(kind)s, %(source)s, %(text)s, %(sentiment)s, %(observed_at)s) "
        "ON CONFLICT (signal_id) DO NOTHING",
        s,
    )
    return cur.rowcount == 1


async def claim_idempotency_key(
    conn: Conn, key: str, fingerprint: str, now: datetime, ttl: timedelta
) -> dict[str, Any] | None:
    """Claim `key` for this transaction, or return the reply stored under it (with its request fingerprint).

    An expired key is forgotten first. If a concurrent transaction holds the same new key, the insert waits for
    it: after its commit the stored reply is returned; after its rollback the claim is ours."""
    await conn.execute("DELETE FROM idempotency_keys WHERE key = %s AND expires_at <= %s", (key, now))
    cur = await conn.execute(
        "INSERT INTO idempotency_keys (key, fingerprint, created_at, expires_at) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (key) DO NOTHING",
        (key, fingerprint, now, now + ttl),
    )
    if cur.rowcount == 1:
        return None
    cur = await conn.execute("SELECT fingerprint, status, body FROM idempotency_keys WHERE key = %s", (key,))
    return await cur.fetchone()


async def save_idempotent_reply(conn: Conn, key: str, status: int, body: Any) -> None:
    await conn.execute("UPDATE idempotency_keys SET status = %s, body = %s WHERE key = %s", (status, Jsonb(body), key))


async def forget_expired_idempotency_keys(conn: Conn, now: datetime) -> int:
    cur = await conn.execute("DELETE FROM idempotency_keys WHERE expires_at <= %s", (now,))
    return cur.rowcount


async def enqueue(conn: Conn, topic: Topic, *events: Envelope) -> None:
    """Write events to the outbox in the caller's transaction (one statement), with the current trace context,
    and wake the relay (PostgreSQL delivers the notification only if the transaction commits).

    Each row's `slot` (0..63) is a hash of its Kafka key: a market's events share a slot, which one relay
    publishes at a time, in id order (see outbox.py)."""
    for event_type, run in groupby(events, key=lambda e: e.event_type):  # consecutive runs: the order is kept
        rows = [(key_of(topic, e).decode(), encode(e)) for e in run]
        await enqueue_encoded(conn, topic, event_type, rows, notify=False)
    await conn.execute("SELECT pg_notify('ingest_outbox', '')")


async def enqueue_encoded(
    conn: Conn, topic: Topic, event_type: str, rows: list[tuple[str, bytes]], *, notify: bool = True
) -> None:
    """`enqueue` for events already encoded, all of one type: (Kafka key, payload) per event, in order."""
    trace: dict[str, str] = {}
    propagate.inject(trace)
    headers = json.dumps({**trace, "event_type": event_type})  # the same for every row: sent once, not per row
    await conn.execute(
        "INSERT INTO outbox (topic, key, slot, payload, headers) "
        "SELECT %s, key, hashtext(key) & 63, payload, %s::jsonb "
        "FROM unnest(%b::text[], %b::bytea[]) AS e(key, payload)",
        (topic.name, headers, [key for key, _ in rows], [payload for _, payload in rows]),
    )
    if notify:
        await conn.execute("SELECT pg_notify('ingest_outbox', '')")
