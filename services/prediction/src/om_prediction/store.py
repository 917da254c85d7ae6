"""prediction's own data: history in PostgreSQL, the latest prediction per market cached in Redis."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import DictRow
from redis.asyncio import Redis

from om_contracts import FeatureVectorComputed, PredictionMade
from om_contracts.caches import PREDICTION_LATEST_FIELD, prediction_latest_key
from om_runtime.cache import CacheReads

COLUMNS = (
    "event_id, market_id, probability, confidence, risk_level, model_version, contributions, features_as_of, made_at,"
    " risk_reasons, final, market_price"
)

#: The runtime's connections return dict rows (psycopg's row_factory=dict_row); its annotations say tuples.
Conn = AsyncConnection[Any]


async def save(conn: Conn, predictions: list[PredictionMade]) -> None:
    """Insert a batch's predictions in one statement: one row per column array, unnested by PostgreSQL. An
    executemany of 500 rows spent ~90 ms per batch in bind/execute round trips under a backlog (issue 9/5)."""
    await conn.execute(
        # bandit: only the module constant COLUMNS is interpolated; every value is bound
        f"INSERT INTO predictions ({COLUMNS})"  # nosec B608
        " SELECT e, m, p, c, r, v, cs::jsonb, f, t, rr::jsonb, fi, mp FROM unnest("
        "%s::text[], %s::text[], %s::float8[], %s::float8[], %s::text[], %s::text[], %s::text[], %s::timestamptz[],"
        " %s::timestamptz[], %s::text[], %s::bool[], %s::float8[]) AS u(e, m, p, c, r, v, cs, f, t, rr, fi, mp)"
        " ON CONFLICT DO NOTHING",
        (
            [str(p.event_id) for p in predictions],
            [p.market_id for p in predictions],
            [p.probability for p in predictions],
            [p.confidence for p in predictions],
            [p.risk_level for p in predictions],
            [p.model_version for p in predictions],
            [json.dumps([c.model_dump() for c in p.contributions]) for p in predictions],
            [p.features_as_of for p in predictions],
            [p.produced_at for p in predictions],
            [json.dumps(p.risk_reasons) for p in predictions],
            [p.final for p in predictions],
            [p.market_price for p in predictions],
        ),
    )


async def latest(conn: Conn, market_id: str) -> DictRow | None:
    cur = await conn.execute(
        # bandit: only the module constant COLUMNS is interpolated; the value is bound
        f"SELECT {COLUMNS} FROM predictions WHERE market_id = %s ORDER BY features_as_of DESC LIMIT 1",  # nosec B608
        (market_id,),
    )
    row: DictRow | None = await cur.fetchone()
    return row


async def history(
    conn: Conn,
    market_id: str,
    limit: int,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    before: tuple[datetime, str] | None = None,
) -> list[DictRow]:
    """Newest first within [start, end); `before` = (features_as_of, event_id) of the last row already seen."""
    cur = await conn.execute(
        # bandit: only the module constant COLUMNS is interpolated; every value is bound
        f"SELECT {COLUMNS} FROM predictions WHERE market_id = %(m)s"  # nosec B608
        " AND (%(start)s::timestamptz IS NULL OR features_as_of >= %(start)s)"
        " AND (%(end)s::timestamptz IS NULL OR features_as_of < %(end)s)"
        " AND (%(bt)s::timestamptz IS NULL OR (features_as_of, event_id) < (%(bt)s, %(bid)s))"
        " ORDER BY features_as_of DESC, event_id DESC LIMIT %(limit)s",
        {
            "m": market_id,
            "start": start,
            "end": end,
            "bt": before[0] if before else None,
            "bid": before[1] if before else None,
            "limit": limit,
        },
    )
    rows: list[DictRow] = await cur.fetchall()
    return rows


async def remember_vectors(conn: Conn, vectors: list[FeatureVectorComputed]) -> None:
    """Keep each market's newest vector (by event time) for re-scoring and final predictions."""
    newest: dict[str, FeatureVectorComputed] = {}
    for v in vectors:  # one row per market (an upsert may not touch a row twice); a later equal time wins
        kept = newest.get(v.market_id)
        if kept is None or kept.occurred_at <= v.occurred_at:
            newest[v.market_id] = v
    rows = list(newest.values())
    # One statement over column arrays, not an executemany (a round trip of bind/execute per row).
    # pydantic's JSON writes NaN and infinities as null: the contract and the wire accept them (a missing value,
    # imputed when scored), PostgreSQL's jsonb does not, and one such vector would fail its whole batch's
    # transaction. Passed as text: a third of the cost of model_dump + json.dumps.
    await conn.execute(
        "INSERT INTO latest_vectors (market_id, features, as_of, source_event_id)"
        " SELECT m, f::jsonb, a, s FROM unnest(%s::text[], %s::text[], %s::timestamptz[], %s::text[]) AS u(m, f, a, s)"
        " ON CONFLICT (market_id) DO UPDATE SET features = EXCLUDED.features, as_of = EXCLUDED.as_of,"
        " source_event_id = EXCLUDED.source_event_id WHERE latest_vectors.as_of <= EXCLUDED.as_of",
        (
            [v.market_id for v in rows],
            [v.features.model_dump_json() for v in rows],
            [v.occurred_at for v in rows],
            [str(v.event_id) for v in rows],
        ),
    )


async def latest_vectors(conn: Conn, market_ids: list[str] | None = None) -> list[DictRow]:
    if market_ids is None:
        cur = await conn.execute("SELECT market_id, features, as_of, source_event_id FROM latest_vectors")
    else:
        cur = await conn.execute(
            "SELECT market_id, features, as_of, source_event_id FROM latest_vectors WHERE market_id = ANY(%s)",
            (market_ids,),
        )
    rows: list[DictRow] = await cur.fetchall()
    return rows


async def forget_vectors(conn: Conn, market_ids: list[str]) -> None:
    await conn.execute("DELETE FROM latest_vectors WHERE market_id = ANY(%s)", (market_ids,))


async def record_outcomes(conn: Conn, outcomes: list[tuple[str, str, float, float, float]]) -> None:
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO live_outcomes (market_id, model_version, probability, market_price, outcome)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            outcomes,
        )


async def live_accuracy(conn: Conn) -> dict[str, dict[str, Any]]:
    """Per model version: settled markets, Brier of its last predictions and of the price at the same time."""
    cur = await conn.execute(
        "SELECT model_version, count(*) AS markets, avg((probability - outcome) ^ 2) AS brier,"
        " avg((market_price - outcome) ^ 2) AS market_brier FROM live_outcomes GROUP BY model_version"
    )
    return {r["model_version"]: {k: r[k] for k in ("markets", "brier", "market_brier")} for r in await cur.fetchall()}


# Replace the cached prediction only with one from newer features, atomically (replicas may race, and
# events can arrive out of order). The hash holds the prediction and its features' time in epoch seconds.
_CACHE_IF_NEWER = """
local cached = redis.call('HGET', KEYS[1], 'as_of')
if cached and tonumber(cached) > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'as_of', ARGV[1], ARGV[4], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""


async def cache_latest(redis: Redis, predictions: list[PredictionMade], ttl_s: int) -> None:
    """Offer each market's newest prediction of the batch to its cache entry, in one round trip."""
    newest: dict[str, PredictionMade] = {}
    for p in predictions:  # the older ones of a market would be refused by the script anyway
        kept = newest.get(p.market_id)
        if kept is None or kept.features_as_of <= p.features_as_of:
            newest[p.market_id] = p
    async with redis.pipeline(transaction=False) as pipe:
        for p in newest.values():
            key = prediction_latest_key(p.market_id)  # read in place by the gateway (om_contracts.caches)
            as_of, body = p.features_as_of.timestamp(), p.model_dump_json()
            pipe.eval(_CACHE_IF_NEWER, 1, key, as_of, body, ttl_s, PREDICTION_LATEST_FIELD)
        await pipe.execute()


LATEST_READS = CacheReads("prediction-latest")  # hits and misses at /metrics, for platform health


async def cached_latest(redis: Redis, market_id: str) -> PredictionMade | None:
    raw = LATEST_READS.seen(await redis.hget(prediction_latest_key(market_id), PREDICTION_LATEST_FIELD))
    return PredictionMade.model_validate_json(raw) if raw else None
