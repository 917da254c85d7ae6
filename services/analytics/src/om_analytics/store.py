"""analytics' tables in PostgreSQL: set-based writes of a batch's effects, and the bounded reads metrics need.

No query here reads a market's or user's whole history: windows read at most 48 h of minute buckets of the
markets a batch touched, users read their open positions, listings read indexed columns of `markets`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, LiteralString, NamedTuple

from psycopg import AsyncConnection, AsyncCursor, sql
from psycopg.rows import tuple_row

from om_analytics import metrics
from om_analytics.calibration import Resolved
from om_analytics.metrics import Bucket, WindowTotals
from om_analytics.portfolio import OpenBook, Position, UserTotals, settle
from om_contracts import MarketCreated, PredictionMade, SignalObserved, TradeExecuted

SETTLED = ("resolved", "cancelled")
#: A connection from the runtime's pool: its rows are dicts (`dict_row`), typed loosely as the runtime types it.
Conn = AsyncConnection[Any]
#: A JSON-ready snapshot (market or user metrics).
Snapshot = dict[str, Any]


async def _one(cur: AsyncCursor[Any]) -> Any:
    """The single row a query always returns (an aggregate, the clock's one row)."""
    row = await cur.fetchone()
    if row is None:
        raise LookupError("expected a row")
    return row


def _array(values: Iterable[Any]) -> str:
    """A PostgreSQL array literal. Column arrays for `unnest` are sent as one text literal each: psycopg's
    per-element array dumping costs several microseconds a value; joining whole columns costs far less."""
    values = list(values)
    kinds = {type(v) for v in values}
    if kinds <= {float, int}:
        return "{" + ",".join(map(repr, values)) + "}"
    if kinds == {datetime}:
        return "{" + ",".join(map(datetime.isoformat, values)) + "}"
    if kinds == {str}:
        whole = "".join(values)  # holds a quote or backslash exactly when some value does
        if '"' not in whole and "\\" not in whole:  # ids and names: nothing to escape
            return '{"' + '","'.join(values) + '"}'
        return '{"' + '","'.join(v.replace("\\", "\\\\").replace('"', '\\"') for v in values) + '"}'
    return "{" + ",".join(map(_element, values)) + "}"


def _element(v: Any) -> str:
    if v is None:
        return "NULL"
    if v is True or v is False:
        return "t" if v else "f"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, datetime):
        return v.isoformat()
    text = v if isinstance(v, str) else json.dumps(v, separators=(",", ":"), default=str)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _arrays(*columns: Iterable[Any]) -> tuple[str, ...]:
    return tuple(_array(c) for c in columns)


# --- writes -----------------------------------------------------------------------------------------


async def advance_clock(conn: Conn, latest: datetime | None, *, returning: bool = True) -> datetime | None:
    """Move the clock to `latest` if that is later; return the clock (None before any event, or when not
    `returning`: then nothing waits for the reply, as in a pipeline)."""
    cur = await conn.execute(
        "UPDATE clock SET as_of = greatest(as_of, %s::timestamptz) WHERE id = 1 RETURNING as_of", (latest,)
    )
    return (await _one(cur))["as_of"] if returning else None


async def start_batch(conn: Conn, latest: datetime) -> datetime:
    """A batch's first statement: move the clock to its latest event time and return the roll-up boundary
    (`roll_up`). Updating the clock row locks it until the batch commits, so no roll-up runs between reading the
    boundary and committing the minutes: a trade before the boundary is merged into its hour and day here, a
    later one by the roll-up, never both, never neither."""
    cur = await conn.execute(
        "UPDATE clock SET as_of = greatest(as_of, %s::timestamptz) WHERE id = 1 RETURNING rolled_through", (latest,)
    )
    rolled: datetime | None = (await _one(cur))["rolled_through"]
    return rolled if rolled is not None else metrics.EPOCH  # nothing rolled up yet: no trade is late


async def clock(conn: Conn) -> datetime | None:
    as_of: datetime | None = (await _one(await conn.execute("SELECT as_of FROM clock WHERE id = 1")))["as_of"]
    return as_of


async def record_created(conn: Conn, e: MarketCreated) -> None:
    await conn.execute(
        "INSERT INTO markets AS m (market_id, category, created_at, close_at, opening_price, current_price, "
        "last_event_at) VALUES (%(id)s, %(category)s, %(at)s, %(close)s, %(price)s, %(price)s, %(at)s) "
        "ON CONFLICT (market_id) DO UPDATE SET category = excluded.category, created_at = excluded.created_at, "
        "close_at = excluded.close_at, opening_price = excluded.opening_price, "
        "current_price = coalesce(m.current_price, excluded.current_price), "
        "last_event_at = greatest(m.last_event_at, excluded.last_event_at)",
        {"id": e.market_id, "category": e.category, "at": e.occurred_at, "close": e.close_at,
         "price": e.initial_price},
    )  # fmt: skip


async def record_status(
    conn: Conn,
    market_id: str,
    status: str,
    at: datetime,
    resolution: str | None = None,
    resolution_price: float | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO markets AS m (market_id, status, resolution, resolution_price, resolved_at, last_event_at) "
        "VALUES (%(id)s, %(status)s, %(resolution)s, %(price)s, %(resolved_at)s, %(at)s) "
        "ON CONFLICT (market_id) DO UPDATE SET status = excluded.status, "
        "resolution = coalesce(excluded.resolution, m.resolution), "
        "resolution_price = coalesce(excluded.resolution_price, m.resolution_price), "
        "resolved_at = coalesce(excluded.resolved_at, m.resolved_at), "
        "last_event_at = greatest(m.last_event_at, excluded.last_event_at)",
        {"id": market_id, "status": status, "resolution": resolution, "price": resolution_price,
         "resolved_at": at if status in SETTLED else None, "at": at},
    )  # fmt: skip


def _columns(rows: list[Any], *names: str) -> tuple[list[Any], ...]:
    return tuple([getattr(row, name) for row in rows] for name in names)


async def insert_trades(conn: Conn, trades: list[TradeExecuted]) -> list[TradeExecuted]:
    """Store new trades' ids; return the trades whose id was not seen before (a trade counts once)."""
    if not trades:
        return []
    cur = await conn.cursor(row_factory=tuple_row).execute(  # plain tuples: one row per trade
        "INSERT INTO trades (trade_id, executed_at) SELECT * FROM unnest(%s::text[], %s::timestamptz[]) "
        "ON CONFLICT DO NOTHING RETURNING trade_id",
        _arrays(*_columns(trades, "trade_id", "occurred_at")),
    )
    inserted = {row[0] for row in await cur.fetchall()}
    fresh, seen = [], set()
    for t in trades:
        if t.trade_id in inserted and t.trade_id not in seen:
            seen.add(t.trade_id)
            fresh.append(t)
    return fresh


async def record_buckets(
    conn: Conn, events: list[TradeExecuted | SignalObserved], coarse_before: datetime | None = None
) -> None:
    """Merge a batch's trades and signals into the stored minute buckets; trades in minutes before
    `coarse_before` (hours already rolled up: `start_batch`) also into their hour and day (None: every trade)."""
    folded = metrics.fold_all(events, coarse_before)
    if not folded:
        return
    keys = sorted(folded)  # rows locked in one order by every writer
    rows = [folded[k] for k in keys]  # Bucket's fields: open, open_key, high, low, close, close_key, sums...
    opened = [r[1] for r in rows]
    closed = [r[5] for r in rows]
    await conn.execute(
        _UPSERT_BUCKETS,
        _arrays(
            [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys], [r[0] for r in rows],
            [k[0] if k else None for k in opened], [k[1] if k else None for k in opened],
            [r[2] for r in rows], [r[3] for r in rows], [r[4] for r in rows],
            [k[0] if k else None for k in closed], [k[1] if k else None for k in closed],
            *([r[i] for r in rows] for i in range(6, 14)),
        ),
    )  # fmt: skip


_BUCKET_COLUMNS: LiteralString = (
    "market_id, resolution, start, open, open_at, open_id, high, low, close, close_at, "
    "close_id, volume, trades, price_volume, abs_move, social, news, sentiment_sum, sentiment_n"
)
# OHLC chosen by (event time, trade id), so the stored bucket is the same whatever order batches come in.
_MERGE_BUCKETS: LiteralString = (
    "ON CONFLICT (market_id, resolution, start) DO UPDATE SET "
    "open = CASE WHEN excluded.open_at IS NOT NULL AND (b.open_at IS NULL "
    "  OR (excluded.open_at, excluded.open_id) < (b.open_at, b.open_id)) THEN excluded.open ELSE b.open END, "
    "open_id = CASE WHEN excluded.open_at IS NOT NULL AND (b.open_at IS NULL "
    "  OR (excluded.open_at, excluded.open_id) < (b.open_at, b.open_id)) THEN excluded.open_id ELSE b.open_id END, "
    "open_at = CASE WHEN excluded.open_at IS NOT NULL AND (b.open_at IS NULL "
    "  OR (excluded.open_at, excluded.open_id) < (b.open_at, b.open_id)) THEN excluded.open_at ELSE b.open_at END, "
    "close = CASE WHEN excluded.close_at IS NOT NULL AND (b.close_at IS NULL "
    "  OR (excluded.close_at, excluded.close_id) > (b.close_at, b.close_id)) THEN excluded.close ELSE b.close END, "
    "close_id = CASE WHEN excluded.close_at IS NOT NULL AND (b.close_at IS NULL "
    "  OR (excluded.close_at, excluded.close_id) > (b.close_at, b.close_id)) THEN excluded.close_id "
    "  ELSE b.close_id END, "
    "close_at = CASE WHEN excluded.close_at IS NOT NULL AND (b.close_at IS NULL "
    "  OR (excluded.close_at, excluded.close_id) > (b.close_at, b.close_id)) THEN excluded.close_at "
    "  ELSE b.close_at END, "
    "high = greatest(b.high, excluded.high), low = least(b.low, excluded.low), "
    "volume = b.volume + excluded.volume, trades = b.trades + excluded.trades, "
    "price_volume = b.price_volume + excluded.price_volume, abs_move = b.abs_move + excluded.abs_move, "
    "social = b.social + excluded.social, news = b.news + excluded.news, "
    "sentiment_sum = b.sentiment_sum + excluded.sentiment_sum, sentiment_n = b.sentiment_n + excluded.sentiment_n"
)
_UPSERT_BUCKETS: LiteralString = (
    "INSERT INTO buckets AS b (" + _BUCKET_COLUMNS + ") "
    "SELECT * FROM unnest(%s::text[], %s::text[], %s::timestamptz[], %s::float8[], %s::timestamptz[], %s::text[], "
    "%s::float8[], %s::float8[], %s::float8[], %s::timestamptz[], %s::text[], %s::float8[], %s::int4[], "
    "%s::float8[], %s::float8[], %s::int4[], %s::int4[], %s::float8[], %s::int4[]) " + _MERGE_BUCKETS
)

# Trade buckets of a finer resolution folded into a coarser one (`period`): open and close by (event time, trade
# id), as `metrics.Bucket.merge` does; signals stay in minutes.
_ROLL: LiteralString = """
SELECT market_id, {resolution}::text AS resolution, date_bin({period}, start, '1970-01-01 00:00:00+00') AS start,
       (array_agg(open ORDER BY open_at, open_id COLLATE "C"))[1] AS open, min(open_at) AS open_at,
       (array_agg(open_id ORDER BY open_at, open_id COLLATE "C"))[1] AS open_id, max(high) AS high, min(low) AS low,
       (array_agg(close ORDER BY close_at DESC, close_id COLLATE "C" DESC))[1] AS close, max(close_at) AS close_at,
       (array_agg(close_id ORDER BY close_at DESC, close_id COLLATE "C" DESC))[1] AS close_id,
       sum(volume) AS volume, sum(trades)::int4 AS trades, sum(price_volume) AS price_volume,
       sum(abs_move) AS abs_move, 0 AS social, 0 AS news, 0.0::float8 AS sentiment_sum, 0 AS sentiment_n
FROM {source} GROUP BY 1, 3 ORDER BY 1, 3
"""
_ROLL_UP: LiteralString = (
    "WITH hours AS ("
    + _ROLL.format(
        resolution="'1h'",
        period="interval '1 hour'",
        source="buckets WHERE resolution = '1m' AND trades > 0 AND start >= %(from)s AND start < %(to)s",
    )
    + "), stored AS (INSERT INTO buckets AS b (" + _BUCKET_COLUMNS + ") SELECT * FROM hours " + _MERGE_BUCKETS
    + ") INSERT INTO buckets AS b (" + _BUCKET_COLUMNS + ") "
    + _ROLL.format(resolution="'1d'", period="interval '1 day'", source="hours")
    + _MERGE_BUCKETS
)  # fmt: skip


async def roll_up(conn: Conn, max_hours: int = 24) -> int:
    """Leader: fold the minute buckets of hours the clock has left (by event time) into their 1h and 1d buckets,
    at most `max_hours` at a time, and move the boundary past them; return the hours rolled. It locks the clock
    row first, so it waits for batches in flight and batches wait for it (see `start_batch`)."""
    # Most calls find no hour over: say so without the lock, which would wait for the batch in flight.
    row = await _one(await conn.execute("SELECT as_of, rolled_through FROM clock WHERE id = 1"))
    if row["as_of"] is None or (
        row["rolled_through"] is not None and metrics.bucket_start(row["as_of"], "1h") <= row["rolled_through"]
    ):
        return 0
    row = await _one(await conn.execute("SELECT as_of, rolled_through FROM clock WHERE id = 1 FOR UPDATE"))
    target = metrics.bucket_start(row["as_of"], "1h")  # hours before the clock's own are over
    start = row["rolled_through"]
    if start is None:  # the first roll-up: from the first minute with a trade
        first = await _one(
            await conn.execute("SELECT min(start) AS start FROM buckets WHERE resolution = '1m' AND trades > 0")
        )
        start = metrics.bucket_start(first["start"], "1h") if first["start"] is not None else target
    end = min(target, start + timedelta(hours=max_hours))
    if end <= start:  # no hour over since the boundary (which may lie ahead: see migration 0005)
        if row["rolled_through"] is None:
            await conn.execute("UPDATE clock SET rolled_through = %s WHERE id = 1", (start,))
        return 0
    await conn.execute(_ROLL_UP, {"from": start, "to": end})
    await conn.execute("UPDATE clock SET rolled_through = %s WHERE id = 1", (end,))
    return int((end - start) / timedelta(hours=1))


# A batch's users: totals added, first and last trade, and the batch's volume per category added to the row's map
# (`categories`: category -> volume; each a sum of two floats, as a row per category added them).
_UPSERT_USERS: LiteralString = (
    "INSERT INTO users AS u (user_id, total_trades, total_volume, first_seen_at, last_trade_at, categories, dirty) "
    "SELECT k.*, coalesce(c.categories, '{}'::jsonb), true FROM unnest(%s::text[], %s::int4[], %s::float8[], "
    "%s::timestamptz[], %s::timestamptz[]) AS k(user_id, total_trades, total_volume, first_seen_at, last_trade_at) "
    "LEFT JOIN (SELECT user_id, jsonb_object_agg(category, volume) AS categories FROM ("
    "  SELECT s.user_id, coalesce(m.category, 'uncategorized') AS category, sum(s.volume) AS volume "
    "  FROM unnest(%s::text[], %s::text[], %s::float8[]) AS s(user_id, market_id, volume) "
    "  JOIN markets m USING (market_id) GROUP BY 1, 2) AS per GROUP BY user_id) AS c USING (user_id) "
    "ORDER BY k.user_id "
    "ON CONFLICT (user_id) DO UPDATE SET total_trades = u.total_trades + excluded.total_trades, "
    "total_volume = u.total_volume + excluded.total_volume, dirty = true, "
    "first_seen_at = least(u.first_seen_at, excluded.first_seen_at), "
    "last_trade_at = greatest(u.last_trade_at, excluded.last_trade_at), "
    # Only the batch's categories (one or two) are added to and replaced: 30 % cheaper than re-aggregating the map.
    "categories = u.categories || coalesce((SELECT jsonb_object_agg(key, value::float8 "
    "  + coalesce((u.categories ->> key)::float8, 0)) FROM jsonb_each_text(excluded.categories)), '{}'::jsonb)"
)


async def record_trades(conn: Conn, trades: list[TradeExecuted]) -> None:
    """Add new trades to markets, participants, platform minutes, users (with categories) and positions: the batch is
    summed here per key, then each table gets one upsert, with no result awaited (so it pipelines)."""
    if not trades:
        return
    trades = sorted(trades, key=metrics.trade_key)  # so each market's first and last trade are its first and last
    platform: dict[datetime, list[Any]] = {}
    markets_acc: dict[str, list[Any]] = {}  # volume, trades, first trade, last trade
    participants: dict[tuple[str, str], datetime] = {}
    users: dict[str, list[Any]] = {}
    spent: dict[tuple[str, str], float] = {}
    positions: dict[tuple[str, str, str], list[Any]] = {}  # buy shares, buy cost, sell shares, sell proceeds, n
    for t in trades:
        at, amount = t.occurred_at, t.amount
        minute = metrics.bucket_start(at, "1m")
        if (p := platform.get(minute)) is None:
            platform[minute] = [amount, 1]
        else:
            p[0] += amount
            p[1] += 1
        if (acc := markets_acc.get(t.market_id)) is None:
            markets_acc[t.market_id] = [amount, 1, t, t]
        else:
            acc[0] += amount
            acc[1] += 1
            acc[3] = t  # sorted: the latest so far
        participants[(t.market_id, t.user_id)] = at  # sorted: the latest so far
        if (u := users.get(t.user_id)) is None:
            users[t.user_id] = [1, amount, at, at]
        else:
            u[0] += 1
            u[1] += amount
            u[3] = at
        pair = (t.user_id, t.market_id)
        spent[pair] = spent.get(pair, 0.0) + amount
        key = (t.user_id, t.market_id, t.outcome)
        if (pos := positions.get(key)) is None:
            pos = positions[key] = [0.0, 0.0, 0.0, 0.0, 0]
        if t.side == "BUY":
            pos[0] += t.shares
            pos[1] += amount
        else:
            pos[2] += t.shares
            pos[3] += amount
        pos[4] += 1

    # Every upsert touches its rows in key order, so two writers never deadlock.
    minutes = sorted(platform)
    await conn.execute(
        "INSERT INTO platform_minutes AS p (start, volume, trades) SELECT * FROM unnest(%s::timestamptz[], "
        "%s::float8[], %s::int4[]) ON CONFLICT (start) DO UPDATE SET volume = p.volume + excluded.volume, "
        "trades = p.trades + excluded.trades",
        _arrays(minutes, [platform[m][0] for m in minutes], [platform[m][1] for m in minutes]),
    )
    pairs = sorted(participants)
    ids = sorted(markets_acc)
    accs = [markets_acc[m] for m in ids]
    # Participants first (a data-modifying CTE), then the markets with the number of participants that were new.
    await conn.execute(
        "WITH p AS (INSERT INTO participants AS p (market_id, user_id, last_trade_at) SELECT * FROM "
        "unnest(%s::text[], %s::text[], %s::timestamptz[]) ON CONFLICT (market_id, user_id) DO UPDATE SET "
        "last_trade_at = greatest(p.last_trade_at, excluded.last_trade_at) RETURNING market_id, (xmax = 0) AS new), "
        "n AS (SELECT market_id, count(*) FILTER (WHERE new)::int4 AS n FROM p GROUP BY market_id) "
        "INSERT INTO markets AS m (market_id, opening_price, current_price, last_trade_at, last_trade_id, "
        "total_volume, trade_count, last_event_at, participant_count, dirty) "
        "SELECT k.*, coalesce(n.n, 0), true FROM unnest(%s::text[], %s::float8[], %s::float8[], %s::timestamptz[], "
        "%s::text[], %s::float8[], %s::int4[], %s::timestamptz[]) AS k(market_id, opening_price, current_price, "
        "last_trade_at, last_trade_id, total_volume, trade_count, last_event_at) LEFT JOIN n USING (market_id) "
        "ORDER BY k.market_id ON CONFLICT (market_id) DO UPDATE SET "
        "total_volume = m.total_volume + excluded.total_volume, trade_count = m.trade_count + excluded.trade_count, "
        "participant_count = m.participant_count + excluded.participant_count, dirty = true, "
        "opening_price = coalesce(m.opening_price, excluded.opening_price), "
        # The latest trade by (event time, trade id) sets the price, whatever the order of arrival.
        "current_price = CASE WHEN m.last_trade_at IS NULL OR (excluded.last_trade_at, excluded.last_trade_id) "
        "  > (m.last_trade_at, m.last_trade_id) THEN excluded.current_price ELSE m.current_price END, "
        "last_trade_id = CASE WHEN m.last_trade_at IS NULL OR (excluded.last_trade_at, excluded.last_trade_id) "
        "  > (m.last_trade_at, m.last_trade_id) THEN excluded.last_trade_id ELSE m.last_trade_id END, "
        "last_trade_at = greatest(m.last_trade_at, excluded.last_trade_at), "
        "last_event_at = greatest(m.last_event_at, excluded.last_event_at)",
        _arrays(
            [m for m, _ in pairs], [u for _, u in pairs], [participants[k] for k in pairs],
            ids, [a[2].price_before for a in accs], [a[3].price_after for a in accs],
            [a[3].occurred_at for a in accs], [a[3].trade_id for a in accs], [a[0] for a in accs],
            [a[1] for a in accs], [a[3].occurred_at for a in accs],
        ),
    )  # fmt: skip
    # Users, with their volume per category (the category of the market as known when its trade is processed:
    # the markets upsert above made every row this joins) merged into the row's map: one row per user, where a
    # table of (user, category) rows cost one more upsert per user and batch.
    uids = sorted(users)
    spent_keys = sorted(spent)
    await conn.execute(_UPSERT_USERS, _arrays(
        uids, *([users[u][i] for u in uids] for i in range(4)),
        [u for u, _ in spent_keys], [m for _, m in spent_keys], [spent[k] for k in spent_keys],
    ))  # fmt: skip
    keys = sorted(positions)
    await conn.execute(
        "INSERT INTO positions AS p (user_id, market_id, outcome, buy_shares, buy_cost, sell_shares, sell_proceeds, "
        "trades) SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::float8[], %s::float8[], %s::float8[], "
        "%s::float8[], %s::int4[]) ON CONFLICT (user_id, market_id, outcome) DO UPDATE SET "
        "buy_shares = p.buy_shares + excluded.buy_shares, buy_cost = p.buy_cost + excluded.buy_cost, "
        "sell_shares = p.sell_shares + excluded.sell_shares, sell_proceeds = p.sell_proceeds + excluded.sell_proceeds, "
        "trades = p.trades + excluded.trades",
        _arrays(
            [u for u, _, _ in keys], [m for _, m, _ in keys], [o for _, _, o in keys],
            *([positions[k][i] for k in keys] for i in range(5)),
        ),
    )  # fmt: skip


async def touch_markets(conn: Conn, last_event: dict[str, datetime]) -> None:
    """Create rows for markets first seen through a signal, and keep each market's latest event time."""
    if last_event:
        await conn.execute(
            "INSERT INTO markets AS m (market_id, last_event_at) SELECT * FROM unnest(%s::text[], "
            "%s::timestamptz[]) ON CONFLICT (market_id) DO UPDATE SET "
            "last_event_at = greatest(m.last_event_at, excluded.last_event_at)",
            (list(last_event), list(last_event.values())),
        )


async def record_predictions(conn: Conn, predictions: list[PredictionMade]) -> None:
    """Keep each market's highest-ranked prediction (`metrics.prediction_rank`: final, then newest features)."""
    latest = metrics.latest_predictions(predictions)
    if not latest:
        return
    await conn.execute(
        "INSERT INTO markets AS m (market_id, predicted_probability, model_version, predicted_as_of, prediction, "
        "prediction_final) SELECT * FROM unnest(%s::text[], %s::float8[], %s::text[], %s::timestamptz[], "
        "%s::jsonb[], %s::bool[]) "
        "ON CONFLICT (market_id) DO UPDATE SET predicted_probability = excluded.predicted_probability, "
        "model_version = excluded.model_version, predicted_as_of = excluded.predicted_as_of, "
        "prediction = excluded.prediction, prediction_final = excluded.prediction_final "
        "WHERE m.predicted_as_of IS NULL OR (excluded.prediction_final, excluded.predicted_as_of, "
        "  (excluded.prediction->>'event_id') COLLATE \"C\") "
        "  >= (m.prediction_final, m.predicted_as_of, (m.prediction->>'event_id') COLLATE \"C\")",
        _arrays(
            *(
                [p.market_id for p in latest],
                [p.probability for p in latest],
                [p.model_version for p in latest],
                [p.features_as_of for p in latest],
                [p.model_dump(mode="json", exclude={"producer", "schema_version", "produced_at"}) for p in latest],
                [p.final for p in latest],
            )
        ),
    )


async def settle_pairs(conn: Conn, pairs: Iterable[tuple[str, str]]) -> set[str]:
    """Re-settle (user, market) pairs in markets that ended: store each pair's result and add the difference to
    its user's totals, so a market's resolution or a late trade in it counts exactly once. Returns the users."""
    pairs = sorted(set(pairs))
    if not pairs:
        return set()
    cur = await conn.execute(
        "SELECT p.*, m.status, m.resolution_price FROM positions p JOIN markets m USING (market_id) "
        "JOIN unnest(%s::text[], %s::text[]) AS k(user_id, market_id) USING (user_id, market_id) "
        "WHERE m.status IN ('resolved', 'cancelled')",
        _arrays(*([u for u, _ in pairs], [m for _, m in pairs])),
    )
    grouped: dict[tuple[str, str], list[Any]] = {}
    for row in await cur.fetchall():
        grouped.setdefault((row["user_id"], row["market_id"]), []).append(row)
    if not grouped:
        return set()
    keys = list(grouped)
    results = {
        k: settle([_position(r) for r in rows], rows[0]["status"], rows[0]["resolution_price"])
        for k, rows in grouped.items()
    }
    cur = await conn.execute(
        "SELECT s.* FROM settlements s JOIN unnest(%s::text[], %s::text[]) AS k(user_id, market_id) "
        "USING (user_id, market_id)",
        _arrays(*([u for u, _ in keys], [m for _, m in keys])),
    )
    before = {(r["user_id"], r["market_id"]): r for r in await cur.fetchall()}
    await conn.execute(
        "INSERT INTO settlements AS s (user_id, market_id, pnl, counted, won) SELECT * FROM unnest(%s::text[], "
        "%s::text[], %s::float8[], %s::bool[], %s::bool[]) ON CONFLICT (user_id, market_id) DO UPDATE SET "
        "pnl = excluded.pnl, counted = excluded.counted, won = excluded.won",
        _arrays(*([u for u, _ in keys], [m for _, m in keys], [results[k].pnl for k in keys],
         [results[k].counted for k in keys], [results[k].won for k in keys])),
    )  # fmt: skip
    deltas: dict[str, list[float]] = {}
    for k in keys:
        new, old = results[k], before.get(k)
        d = deltas.setdefault(k[0], [0.0, 0, 0])
        d[0] += new.pnl - (old["pnl"] if old else 0.0)
        d[1] += int(new.counted) - (int(old["counted"]) if old else 0)
        d[2] += int(new.won) - (int(old["won"]) if old else 0)
    await conn.execute(
        "UPDATE users u SET settled_pnl = u.settled_pnl + d.pnl, resolved_positions = u.resolved_positions + d.n, "
        "winning_positions = u.winning_positions + d.w FROM unnest(%s::text[], %s::float8[], %s::int4[], "
        "%s::int4[]) AS d(user_id, pnl, n, w) WHERE u.user_id = d.user_id",
        _arrays(list(deltas), *([d[i] for d in deltas.values()] for i in range(3))),
    )
    await conn.execute(
        "UPDATE positions p SET settled = true FROM unnest(%s::text[], %s::text[]) AS k(user_id, market_id) "
        "WHERE p.user_id = k.user_id AND p.market_id = k.market_id AND NOT p.settled",
        _arrays(*([u for u, _ in keys], [m for _, m in keys])),
    )
    return set(deltas)


async def holders(conn: Conn, market_id: str) -> list[tuple[str, str]]:
    # Its participants are exactly the users with positions in it (a trade writes both), and are keyed by market.
    cur = await conn.execute("SELECT user_id FROM participants WHERE market_id = %s", (market_id,))
    return [(row["user_id"], market_id) for row in await cur.fetchall()]


async def settled_markets(conn: Conn, market_ids: list[str]) -> set[str]:
    cur = await conn.execute(
        "SELECT market_id FROM markets WHERE market_id = ANY(%s) AND status IN ('resolved', 'cancelled')",
        (market_ids,),
    )
    return {row["market_id"] for row in await cur.fetchall()}


def _position(row: dict[str, Any]) -> Position:
    return Position(
        market_id=row["market_id"], outcome=row["outcome"], buy_shares=row["buy_shares"], buy_cost=row["buy_cost"],
        sell_shares=row["sell_shares"], sell_proceeds=row["sell_proceeds"], trades=row["trades"],
    )  # fmt: skip


async def mark_dirty(conn: Conn, market_ids: list[str], user_ids: list[str]) -> None:
    """Flag markets and users whose snapshot must be recomputed (by the leader, once for many batches)."""
    if market_ids:
        await conn.execute(
            "UPDATE markets SET dirty = true WHERE market_id = ANY(%s::text[]) AND NOT dirty",
            (_array(sorted(market_ids)),),
        )
    if user_ids:
        await conn.execute(
            "UPDATE users SET dirty = true WHERE user_id = ANY(%s::text[]) AND NOT dirty", (_array(sorted(user_ids)),)
        )


async def dirty(conn: Conn, table: str, limit: int, after: str = "") -> list[str]:
    """Up to `limit` markets or users flagged for a snapshot, without locking them: the round reads them in a
    snapshot of its own and clears each flag only if the row is still the version it read (`save_*`), so a batch
    never waits for a round (which waits for Kafka's confirmations) and a change made meanwhile is not lost.
    In key order from after `after`: rounds go round the flagged rows, so none waits behind rows that a busy
    stream flags again and again."""
    key = {"markets": "market_id", "users": "user_id"}[table]  # a fixed set: never user text in SQL
    query = sql.SQL("SELECT {key} FROM {table} WHERE dirty AND {key} > %s ORDER BY {key} LIMIT %s").format(
        table=sql.Identifier(table), key=sql.Identifier(key)
    )
    cur = await conn.execute(query, (after, limit))
    return [row[key] for row in await cur.fetchall()]


async def unflag(conn: Conn, table: str, versions: dict[str, str]) -> None:
    """Clear the flag of markets or users whose row is still the version given."""
    key = {"markets": "market_id", "users": "user_id"}[table]  # a fixed set: never user text in SQL
    # SKIP LOCKED: a row a batch holds is being changed, so its version will not match anyway; waiting for it
    # only risked a deadlock with that batch (1 s before PostgreSQL breaks it).
    query = sql.SQL(
        "WITH free AS (SELECT t.{key} AS id FROM {table} t JOIN unnest(%s::text[], %s::text[]) AS k(id, version) "
        "ON t.{key} = k.id WHERE t.xmin::text = k.version FOR UPDATE OF t SKIP LOCKED) "
        "UPDATE {table} t SET dirty = false FROM free WHERE t.{key} = free.id"
    ).format(table=sql.Identifier(table), key=sql.Identifier(key))
    await conn.execute(query, _arrays(list(versions), list(versions.values())))


async def read_consistently(conn: Conn) -> None:
    """Make the caller's (new) transaction read one snapshot of every table: a round's rows and buckets agree."""
    await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")


# --- reads for metrics ----------------------------------------------------------------------------


async def market_rows(conn: Conn, market_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Markets' rows, each with `row_version` (its `xmin`: which transaction wrote it last)."""
    cur = await conn.execute(
        "SELECT *, xmin::text AS row_version FROM markets WHERE market_id = ANY(%s) ORDER BY market_id", (market_ids,)
    )
    return {row["market_id"]: row for row in await cur.fetchall()}


async def window_totals(conn: Conn, market_ids: list[str], as_of: datetime) -> dict[str, WindowTotals]:
    """Each market's sums over the minute buckets of the window and of the 24 h before (≤ 2,880 rows each)."""
    start, end = metrics.window_minutes(as_of)
    cur = await conn.execute(
        "SELECT market_id, "
        "coalesce(sum(volume) FILTER (WHERE start > %(start)s), 0) AS volume, "
        "coalesce(sum(trades) FILTER (WHERE start > %(start)s), 0) AS trades, "
        "coalesce(sum(price_volume) FILTER (WHERE start > %(start)s), 0) AS price_volume, "
        "coalesce(sum(abs_move) FILTER (WHERE start > %(start)s), 0) AS abs_move, "
        "coalesce(sum(social) FILTER (WHERE start > %(start)s), 0) AS social, "
        "coalesce(sum(news) FILTER (WHERE start > %(start)s), 0) AS news, "
        "coalesce(sum(sentiment_sum) FILTER (WHERE start > %(start)s), 0) AS sentiment_sum, "
        "coalesce(sum(sentiment_n) FILTER (WHERE start > %(start)s), 0) AS sentiment_n, "
        "stddev_pop(close) FILTER (WHERE start > %(start)s) AS close_stddev, "
        "count(close) FILTER (WHERE start > %(start)s) AS closes, "
        "coalesce(sum(volume) FILTER (WHERE start <= %(start)s), 0) AS prior_volume "
        "FROM buckets WHERE resolution = '1m' AND market_id = ANY(%(ids)b) AND start > %(prior)s "
        "AND start <= %(end)s GROUP BY market_id",
        {"start": start, "end": end, "prior": start - metrics.WINDOW, "ids": market_ids},
    )
    totals = {}
    for row in await cur.fetchall():
        row = dict(row)
        market_id = row.pop("market_id")
        closes = row.pop("closes")
        row["close_stddev"] = row["close_stddev"] if closes >= 2 else None
        totals[market_id] = WindowTotals(**row)
    return totals


async def reference_prices(conn: Conn, market_ids: list[str], as_of: datetime) -> dict[str, float]:
    """The close of each market's last trade before the window (minute buckets, else hour, else day buckets
    wholly before it, for markets quiet for longer than minute buckets are kept)."""
    start, _ = metrics.window_minutes(as_of)
    cur = await conn.execute(
        "SELECT k.market_id, coalesce("
        " (SELECT close FROM buckets WHERE market_id = k.market_id AND resolution = '1m' AND start <= %(start)s "
        "   AND trades > 0 ORDER BY start DESC LIMIT 1),"
        " (SELECT close FROM buckets WHERE market_id = k.market_id AND resolution = '1h' "
        "   AND start <= %(start)s - interval '1 hour' ORDER BY start DESC LIMIT 1),"
        " (SELECT close FROM buckets WHERE market_id = k.market_id AND resolution = '1d' "
        "   AND start <= %(start)s - interval '1 day' ORDER BY start DESC LIMIT 1)) AS close "
        "FROM unnest(%(ids)b::text[]) AS k(market_id)",
        {"start": start, "ids": market_ids},
    )
    return {row["market_id"]: row["close"] for row in await cur.fetchall() if row["close"] is not None}


async def active_traders(conn: Conn, market_ids: list[str], as_of: datetime) -> dict[str, int]:
    start, _ = metrics.window_minutes(as_of)
    cur = await conn.execute(
        "SELECT market_id, count(*) AS n FROM participants WHERE market_id = ANY(%s) AND last_trade_at >= %s "
        "GROUP BY market_id",
        (market_ids, start + timedelta(minutes=1)),
    )
    return {row["market_id"]: row["n"] for row in await cur.fetchall()}


async def save_market_snapshots(
    conn: Conn, snapshots: dict[str, dict[str, Any]], texts: dict[str, str], as_of: datetime, versions: dict[str, str]
) -> None:
    """Store market snapshots (as their JSON texts) with the columns listings sort by, and clear their flag —
    only where the row is still the version the snapshot was computed from (else a batch changed it since: it
    stays flagged, for the next round). Rounds take turns, so what is stored is never older than what was."""
    ids = list(snapshots)
    await conn.execute(
        # Rows a batch holds are skipped, not waited for (a deadlock with it cost 1 s); they stay flagged, so the
        # next round stores them.
        "WITH s AS (SELECT * FROM unnest(%s::text[], %s::jsonb[], %s::float8[], %s::float8[], %s::text[]) "
        "AS s(market_id, snapshot, volume, liquidity, version)), "
        "free AS (SELECT m.market_id FROM markets m JOIN s USING (market_id) FOR UPDATE OF m SKIP LOCKED) "
        "UPDATE markets m SET snapshot = s.snapshot, snapshot_as_of = %s, volume_24h = s.volume, "
        "liquidity = s.liquidity, dirty = m.dirty AND m.xmin::text <> s.version FROM s JOIN free USING (market_id) "
        "WHERE m.market_id = s.market_id",
        (
            *_arrays(
                ids,
                [texts[m] for m in ids],
                [snapshots[m]["volume_24h"] for m in ids],
                [snapshots[m]["liquidity"] for m in ids],
                [versions[m] for m in ids],
            ),
            as_of,
        ),
    )


async def stale_markets(conn: Conn, as_of: datetime, limit: int) -> list[str]:
    """Markets whose stored snapshot's windows may have moved since: computed before `as_of`, with an event
    within 48 h of that snapshot (older activity has left every window already)."""
    cur = await conn.execute(
        "SELECT market_id FROM markets WHERE last_event_at > %s AND snapshot_as_of < %s "
        "AND last_event_at > snapshot_as_of - interval '48 hours' ORDER BY market_id LIMIT %s",
        (as_of - 2 * metrics.WINDOW, metrics.bucket_start(as_of, "1m"), limit),
    )
    return [row["market_id"] for row in await cur.fetchall()]


class UserInputs(NamedTuple):
    totals: dict[str, UserTotals]
    books: dict[str, OpenBook]  # the sums of each user's open positions, marked at their markets' YES prices
    preferred: dict[str, list[str]]  # top 3 categories by volume
    versions: dict[str, str]  # each user row's `xmin`


# One row per user: the open positions are summed here (`portfolio.open_book` is the definition), so Python's
# cost per snapshot does not grow with the positions a user holds. Per position: net shares, average buy price,
# what a share is worth now; per market: realized, unrealized and the positive exposures; per user: their sums.
_USER_INPUTS: LiteralString = """
WITH pos AS (
    SELECT p.user_id, p.market_id, p.buy_shares - p.sell_shares AS net, p.sell_shares, p.sell_proceeds,
           CASE WHEN p.buy_shares > 0 THEN p.buy_cost / p.buy_shares ELSE 0 END AS avg,
           CASE WHEN p.outcome = 'YES' THEN coalesce(m.current_price, 0.5)
                ELSE 1 - coalesce(m.current_price, 0.5) END AS worth
    FROM positions p JOIN markets m USING (market_id)
    WHERE p.user_id = ANY(%(ids)s::text[]) AND NOT p.settled),
per_market AS (
    SELECT user_id, sum(sell_proceeds - sell_shares * avg) AS realized, sum(net * (worth - avg)) AS unrealized,
           coalesce(sum(greatest(0, net) * avg) FILTER (WHERE greatest(0, net) * avg > 0), 0) AS exposure,
           count(*) FILTER (WHERE abs(net) > 1e-12) AS open
    FROM pos GROUP BY user_id, market_id),
book AS (
    SELECT user_id, sum(realized) AS realized, sum(unrealized) AS unrealized, sum(exposure) AS exposure,
           sum(exposure * exposure) AS squares, max(exposure) AS largest, sum(open)::int AS open
    FROM per_market GROUP BY user_id)
SELECT u.user_id, u.xmin::text, u.total_trades, u.total_volume, u.first_seen_at, u.last_trade_at, u.settled_pnl,
       u.resolved_positions, u.winning_positions, b.realized, b.unrealized, b.exposure, b.squares, b.largest, b.open,
       (SELECT (array_agg(key ORDER BY value::float8 DESC, key COLLATE "C"))[1:3]
        FROM jsonb_each_text(u.categories)) AS top
FROM users u LEFT JOIN book b USING (user_id)
WHERE u.user_id = ANY(%(ids)s::text[])
"""


async def user_inputs(conn: Conn, user_ids: list[str]) -> UserInputs:
    """Per user: totals, the sums of the open positions, preferred categories, row version (one row each)."""
    cur = await conn.cursor(row_factory=tuple_row).execute(_USER_INPUTS, {"ids": _array(user_ids)})
    inputs = UserInputs({}, {}, {}, {})
    for (user_id, version, trades, volume, first, last, pnl, resolved, won,
         realized, unrealized, exposure, squares, largest, n_open, top) in await cur.fetchall():  # fmt: skip
        inputs.versions[user_id] = version
        inputs.totals[user_id] = UserTotals(
            total_trades=trades, total_volume=volume, first_trade_at=first, last_trade_at=last, settled_pnl=pnl,
            resolved_positions=resolved, winning_positions=won,
        )  # fmt: skip
        inputs.books[user_id] = (
            OpenBook(realized, unrealized, exposure, squares, largest or 0.0, n_open)
            if n_open is not None
            else OpenBook()
        )
        inputs.preferred[user_id] = top or []
    return inputs


async def save_user_snapshots(conn: Conn, versions: dict[str, str]) -> None:
    """Clear the flag of users whose row is still the version read. (Their snapshots live in Redis and on the
    topic; the API computes a user's metrics afresh, so nothing would read a copy here.)"""
    await unflag(conn, "users", versions)


# --- reads for the API and the system snapshot ----------------------------------------------------


async def market_snapshot(conn: Conn, market_id: str) -> dict[str, Any] | None:
    cur = await conn.execute("SELECT snapshot FROM markets WHERE market_id = %s", (market_id,))
    row = await cur.fetchone()
    return row["snapshot"] if row else None


async def system_totals(conn: Conn, as_of: datetime | None) -> dict[str, Any]:
    start, end = metrics.window_minutes(as_of) if as_of else (None, None)
    cur = await conn.execute(
        "SELECT (SELECT count(*) FROM users) AS total_users, "
        "(SELECT count(*) FROM users WHERE last_trade_at >= %(active)s) AS active_users, "
        "(SELECT count(*) FROM markets) AS total_markets, "
        "(SELECT count(*) FROM markets WHERE status = 'open') AS active_markets, "
        "(SELECT coalesce(sum(volume), 0) FROM platform_minutes WHERE start > %(start)s AND start <= %(end)s) "
        "  AS total_volume_24h, "
        "(SELECT coalesce(sum(trades), 0) FROM platform_minutes WHERE start > %(start)s AND start <= %(end)s) "
        "  AS total_trades_24h",
        {"active": start + timedelta(minutes=1) if start else None, "start": start, "end": end},
    )
    row = dict(await _one(cur))
    row["total_volume_24h"] = round(row["total_volume_24h"], 6)
    return row


async def top_market_snapshots(conn: Conn, limit: int) -> list[dict[str, Any]]:
    cur = await conn.execute(
        "SELECT snapshot FROM markets WHERE volume_24h > 0 AND snapshot IS NOT NULL "
        "ORDER BY volume_24h DESC, market_id LIMIT %s",
        (limit,),
    )
    return [row["snapshot"] for row in await cur.fetchall()]


SORTS = {"volume_24h": "volume_24h", "liquidity": "liquidity", "close_at": "close_at"}


async def list_markets(
    conn: Conn,
    *,
    status: str | None,
    category: str | None,
    sort: str,
    descending: bool,
    offset: int,
    limit: int,
) -> list[dict[str, Any]]:
    query = sql.SQL(
        "SELECT snapshot FROM markets WHERE snapshot IS NOT NULL AND (%(status)s::text IS NULL OR status = "
        "%(status)s) AND (%(category)s::text IS NULL OR category = %(category)s) "
        "ORDER BY {column} {direction}, market_id LIMIT %(limit)s OFFSET %(offset)s"
    ).format(
        column=sql.Identifier(SORTS[sort]),  # from a fixed set
        direction=sql.SQL("DESC NULLS LAST" if descending else "ASC NULLS LAST"),
    )
    cur = await conn.execute(query, {"status": status, "category": category, "limit": limit, "offset": offset})
    return [row["snapshot"] for row in await cur.fetchall()]


async def market_buckets(
    conn: Conn, market_id: str, resolution: str, start: datetime, end: datetime
) -> dict[datetime, Bucket]:
    """A market's buckets of `resolution` with trades, keyed by start, from `start`'s period to `end`. Hours and
    days not rolled up yet come from their minutes (read in the same statement as the boundary, so a roll-up in
    between never counts a minute twice or not at all)."""
    cur = await conn.execute(
        "SELECT * FROM buckets WHERE market_id = %(id)s AND resolution = %(res)s AND start >= %(start)s "
        "AND start <= %(end)s AND trades > 0 "
        "UNION ALL SELECT b.* FROM buckets b, clock c WHERE %(res)s <> '1m' AND b.market_id = %(id)s "
        "AND b.resolution = '1m' AND b.start >= greatest(%(start)s, coalesce(c.rolled_through, '-infinity')) "
        "AND b.start <= %(end)s AND b.trades > 0",
        {"id": market_id, "res": resolution, "start": metrics.bucket_start(start, resolution), "end": end},
    )
    merged: dict[datetime, Bucket] = {}
    for r in await cur.fetchall():
        key = metrics.bucket_start(r["start"], resolution)
        piece = _bucket(r)
        merged[key] = merged[key].merge(piece) if key in merged else piece
    return dict(sorted(merged.items()))


def _bucket(r: dict[str, Any]) -> Bucket:
    return Bucket(
            open=r["open"],
            open_key=(r["open_at"], r["open_id"]),
            high=r["high"],
            low=r["low"],
            close=r["close"],
            close_key=(r["close_at"], r["close_id"]),
            volume=r["volume"],
            trades=r["trades"],
        )  # fmt: skip


async def open_positions(conn: Conn, user_id: str) -> list[dict[str, Any]]:
    cur = await conn.execute(
        "SELECT p.*, m.current_price, m.status, m.category, m.predicted_probability, m.model_version "
        "FROM positions p JOIN markets m USING (market_id) WHERE p.user_id = %s AND NOT p.settled "
        "ORDER BY p.market_id, p.outcome",
        (user_id,),
    )
    return list(await cur.fetchall())


async def resolved_markets(conn: Conn) -> list[Resolved]:
    cur = await conn.execute(
        "SELECT market_id, coalesce(category, 'uncategorized') AS category, current_price, predicted_probability, "
        "model_version, resolution_price FROM markets WHERE status = 'resolved' AND resolution_price IS NOT NULL"
    )
    return [
        Resolved(
            market_id=r["market_id"],
            category=r["category"],
            price=r["current_price"],
            predicted=r["predicted_probability"],
            model_version=r["model_version"],
            outcome=r["resolution_price"],
        )  # fmt: skip
        for r in await cur.fetchall()
    ]


async def comparable_candidates(conn: Conn, category: str, close_at: datetime | None) -> list[dict[str, Any]]:
    """Up to 200 markets of the category nearest by close time (ranked further in the pure insights module)."""
    cur = await conn.execute(
        "SELECT market_id, close_at, liquidity FROM markets WHERE category = %s AND snapshot IS NOT NULL "
        "ORDER BY abs(extract(epoch FROM close_at - %s::timestamptz)) NULLS LAST, market_id LIMIT 200",
        (category, close_at),
    )
    return list(await cur.fetchall())


async def prune(conn: Conn, as_of: datetime, retention: dict[str, timedelta]) -> int:
    """Delete what is older than its retention (relative to the clock): buckets per resolution, platform
    minutes and stored trades. (`processed_events` belongs to the runtime's consumer and is not pruned here.)"""
    deleted = 0
    for resolution in ("1m", "1h", "1d"):
        if (keep := retention.get(resolution)) is not None:
            cur = await conn.execute(
                "DELETE FROM buckets WHERE resolution = %s AND start < %s "
                # minutes not rolled up into their hours yet are kept, whatever their age
                "AND (resolution <> '1m' OR start < (SELECT coalesce(rolled_through, '-infinity') FROM clock))",
                (resolution, as_of - keep),
            )
            deleted += cur.rowcount
    if (keep := retention.get("1m")) is not None:
        deleted += (await conn.execute("DELETE FROM platform_minutes WHERE start < %s", (as_of - keep,))).rowcount
    if (keep := retention.get("trades")) is not None:
        deleted += (await conn.execute("DELETE FROM trades WHERE executed_at < %s", (as_of - keep,))).rowcount
    return deleted
