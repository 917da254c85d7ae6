"""analytics' own read models in PostgreSQL, and the queries that turn them into metrics."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from om_analytics.metrics import latest_predictions, price_change_pct, trade_deltas, user_activity, window_start
from om_contracts import (
    MarketCreated,
    MarketSummary,
    PredictionMade,
    SystemMetrics,
    TradeExecuted,
)


async def record_created(conn: AsyncConnection, e: MarketCreated) -> None:
    await conn.execute(
        "INSERT INTO markets (market_id, category, created_at, close_at, opening_price, current_price) "
        "VALUES (%(id)s, %(category)s, %(at)s, %(close)s, %(price)s, %(price)s) "
        "ON CONFLICT (market_id) DO UPDATE SET category = excluded.category, created_at = excluded.created_at, "
        "close_at = excluded.close_at, opening_price = excluded.opening_price, "
        "current_price = coalesce(markets.current_price, excluded.current_price)",
        {
            "id": e.market_id,
            "category": e.category,
            "at": e.occurred_at,
            "close": e.close_at,
            "price": e.initial_price,
        },
    )


async def record_status(conn: AsyncConnection, market_id: str, status: str) -> None:
    await conn.execute(
        "INSERT INTO markets (market_id, status) VALUES (%s, %s) "
        "ON CONFLICT (market_id) DO UPDATE SET status = excluded.status",
        (market_id, status),
    )


async def record_trades(conn: AsyncConnection, trades: list[TradeExecuted]) -> None:
    """Add new trades to their markets, participants and users: a fixed number of statements per batch."""
    if not trades:
        return
    cur = await conn.execute(
        "INSERT INTO trades (trade_id, market_id, user_id, amount, price_after, executed_at) "
        "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::float8[], %s::float8[], %s::timestamptz[]) "
        "ON CONFLICT DO NOTHING RETURNING trade_id",
        _columns(trades, "trade_id", "market_id", "user_id", "amount", "price_after", "occurred_at"),
    )
    inserted = {row["trade_id"] for row in await cur.fetchall()}
    trades = [t for t in trades if t.trade_id in inserted]  # a trade id seen before counts once
    if not trades:
        return
    cur = await conn.execute(
        "INSERT INTO participants (market_id, user_id) SELECT * FROM unnest(%s::text[], %s::text[]) "
        "ON CONFLICT DO NOTHING RETURNING market_id, user_id",
        _columns(trades, "market_id", "user_id"),
    )
    newcomers = {(row["market_id"], row["user_id"]) for row in await cur.fetchall()}
    activity = user_activity(trades)
    await conn.execute(
        "INSERT INTO users AS u (user_id, first_seen_at, last_trade_at) "
        "SELECT * FROM unnest(%s::text[], %s::timestamptz[], %s::timestamptz[]) ON CONFLICT (user_id) DO UPDATE "
        "SET first_seen_at = least(u.first_seen_at, excluded.first_seen_at), "
        "last_trade_at = greatest(u.last_trade_at, excluded.last_trade_at)",
        (list(activity), [f for f, _ in activity.values()], [last for _, last in activity.values()]),
    )
    # The latest trade by event time sets the price; a market first seen here opens at its first price_before.
    async with conn.cursor() as c:
        await c.executemany(
            "INSERT INTO markets AS m (market_id, opening_price, current_price, last_trade_at, total_volume, "
            "trade_count, participant_count) VALUES (%(market_id)s, %(opening_price)s, %(last_price)s, "
            "%(last_trade_at)s, %(volume)s, %(trades)s, %(new_participants)s) "
            "ON CONFLICT (market_id) DO UPDATE SET "
            "total_volume = m.total_volume + excluded.total_volume, "
            "trade_count = m.trade_count + excluded.trade_count, "
            "participant_count = m.participant_count + excluded.participant_count, "
            "opening_price = coalesce(m.opening_price, excluded.opening_price), "
            "current_price = CASE WHEN m.last_trade_at IS NULL OR excluded.last_trade_at >= m.last_trade_at "
            "  THEN excluded.current_price ELSE m.current_price END, "
            "last_trade_at = greatest(m.last_trade_at, excluded.last_trade_at)",
            [vars(d) for d in trade_deltas(trades, newcomers)],
        )


def _columns(rows: list[Any], *names: str) -> tuple[list[Any], ...]:
    return tuple([getattr(row, name) for row in rows] for name in names)


async def record_predictions(conn: AsyncConnection, predictions: list[PredictionMade]) -> None:
    """Keep each market's prediction from the newest features (they can arrive out of order, or before the
    market itself)."""
    if not predictions:
        return
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO markets AS m (market_id, predicted_probability, model_version, predicted_as_of) "
            "VALUES (%(id)s, %(p)s, %(v)s, %(at)s) ON CONFLICT (market_id) DO UPDATE SET "
            "predicted_probability = excluded.predicted_probability, model_version = excluded.model_version, "
            "predicted_as_of = excluded.predicted_as_of "
            "WHERE m.predicted_as_of IS NULL OR m.predicted_as_of <= excluded.predicted_as_of",
            [
                {"p": p.probability, "v": p.model_version, "at": p.features_as_of, "id": p.market_id}
                for p in latest_predictions(predictions)
            ],
        )


_MARKET_METRICS = """
SELECT m.market_id, m.status, m.current_price, m.total_volume, m.trade_count, m.participant_count,
       m.predicted_probability, m.model_version, m.opening_price,
       coalesce(w.volume_24h, 0) AS volume_24h,
       coalesce(
         (SELECT t.price_after FROM trades t
           WHERE t.market_id = m.market_id AND t.executed_at <= %(since)s
           ORDER BY t.executed_at DESC LIMIT 1),
         m.opening_price) AS reference_price
FROM markets m
LEFT JOIN LATERAL (
  SELECT sum(t.amount) AS volume_24h FROM trades t WHERE t.market_id = m.market_id AND t.executed_at > %(since)s
) w ON true
"""


def _metrics(row: dict[str, Any]) -> dict[str, Any]:
    row = dict(row)
    row["price_change_24h"] = price_change_pct(row["current_price"], row.pop("reference_price"))
    row.pop("opening_price")
    return row


async def market_metrics(conn: AsyncConnection, market_id: str, now: datetime) -> dict[str, Any] | None:
    """A market's metrics; None until its price is known (from its creation or a trade)."""
    return (await markets_metrics(conn, [market_id], now)).get(market_id)


async def markets_metrics(conn: AsyncConnection, market_ids: list[str], now: datetime) -> dict[str, dict[str, Any]]:
    """Metrics of the markets whose price is known, by market id."""
    cur = await conn.execute(
        _MARKET_METRICS + " WHERE m.market_id = ANY(%(ids)s) AND m.current_price IS NOT NULL",
        {"since": window_start(now), "ids": market_ids},
    )
    return {row["market_id"]: _metrics(row) for row in await cur.fetchall()}


async def system_metrics(conn: AsyncConnection, now: datetime) -> SystemMetrics:
    cur = await conn.execute(
        "SELECT (SELECT count(*) FROM users) AS total_users, "
        "(SELECT count(*) FROM users WHERE last_trade_at > %(since)s) AS active_users, "
        "(SELECT count(*) FROM markets) AS total_markets, "
        "(SELECT count(*) FROM markets WHERE status = 'open') AS active_markets, "
        "(SELECT coalesce(sum(amount), 0) FROM trades WHERE executed_at > %(since)s) AS total_volume_24h, "
        "(SELECT count(*) FROM trades WHERE executed_at > %(since)s) AS total_trades_24h",
        {"since": window_start(now)},
    )
    return SystemMetrics(**await cur.fetchone())


async def top_markets(conn: AsyncConnection, now: datetime, limit: int) -> list[MarketSummary]:
    """The markets with the most volume in the last 24 h."""
    cur = await conn.execute(
        # bandit: only module constants (column lists, a fixed lock clause) are interpolated; values are bound
        "WITH top AS (SELECT market_id FROM trades WHERE executed_at > %(since)s "  # nosec B608
        "  GROUP BY market_id ORDER BY sum(amount) DESC, market_id LIMIT %(limit)s) "
        + _MARKET_METRICS
        + " JOIN top USING (market_id) ORDER BY volume_24h DESC, m.market_id",
        {"since": window_start(now), "limit": limit},
    )
    return [
        MarketSummary(
            market_id=r["market_id"],
            current_price=r["current_price"],
            volume_24h=r["volume_24h"],
            price_change_24h=r["price_change_24h"],
        )
        for r in map(_metrics, await cur.fetchall())
    ]
