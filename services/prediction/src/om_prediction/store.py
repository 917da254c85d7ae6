"""prediction's own data: history in PostgreSQL, the latest prediction per market cached in Redis."""

from __future__ import annotations

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from redis.asyncio import Redis

from om_contracts import PredictionMade
from om_runtime.cache import KeySpace

KEYS = KeySpace("prediction")
COLUMNS = (
    "event_id, market_id, probability, confidence, risk_level, model_version, contributions, features_as_of, made_at"
)


async def save(conn: AsyncConnection, predictions: list[PredictionMade]) -> None:
    async with conn.cursor() as cur:
        await cur.executemany(
            # bandit: only module constants (column lists, a fixed lock clause) are interpolated; values are bound
            f"INSERT INTO predictions ({COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",  # nosec B608
            [
                (
                    str(p.event_id),
                    p.market_id,
                    p.probability,
                    p.confidence,
                    p.risk_level,
                    p.model_version,
                    Jsonb([c.model_dump() for c in p.contributions]),
                    p.features_as_of,
                    p.produced_at,
                )
                for p in predictions
            ],
        )


async def latest(conn: AsyncConnection, market_id: str) -> dict | None:
    cur = await conn.execute(
        # bandit: only module constants (column lists, a fixed lock clause) are interpolated; values are bound
        f"SELECT {COLUMNS} FROM predictions WHERE market_id = %s ORDER BY features_as_of DESC LIMIT 1",  # nosec B608
        (market_id,),
    )
    return await cur.fetchone()


async def history(conn: AsyncConnection, market_id: str, limit: int) -> list[dict]:
    cur = await conn.execute(
        # bandit: only module constants (column lists, a fixed lock clause) are interpolated; values are bound
        f"SELECT {COLUMNS} FROM predictions WHERE market_id = %s ORDER BY features_as_of DESC LIMIT %s",  # nosec B608
        (market_id, limit),
    )
    return await cur.fetchall()


# Replace the cached prediction only with one from newer features, atomically (replicas may race, and
# events can arrive out of order). The hash holds the prediction and its features' time in epoch seconds.
_CACHE_IF_NEWER = """
local cached = redis.call('HGET', KEYS[1], 'as_of')
if cached and tonumber(cached) > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'as_of', ARGV[1], 'prediction', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""


async def cache_latest(redis: Redis, predictions: list[PredictionMade], ttl_s: int) -> None:
    """Offer each prediction to its market's cache entry, in one round trip."""
    async with redis.pipeline(transaction=False) as pipe:
        for p in predictions:
            key = KEYS.key("latest", p.market_id)
            pipe.eval(_CACHE_IF_NEWER, 1, key, p.features_as_of.timestamp(), p.model_dump_json(), ttl_s)
        await pipe.execute()


async def cached_latest(redis: Redis, market_id: str) -> PredictionMade | None:
    raw = await redis.hget(KEYS.key("latest", market_id), "prediction")
    return PredictionMade.model_validate_json(raw) if raw else None
