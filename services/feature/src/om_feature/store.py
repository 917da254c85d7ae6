"""feature's own data: market state and snapshots in PostgreSQL, online features in Redis (`feature:` keys)."""

from __future__ import annotations

import json

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from pydantic import TypeAdapter
from redis.asyncio import Redis

from om_contracts import FeatureVectorComputed
from om_feature.features import MarketState
from om_runtime.cache import KeySpace

_STATE = TypeAdapter(MarketState)
KEYS = KeySpace("feature")


async def lock_state(conn: AsyncConnection, market_id: str) -> MarketState:
    """The market's state, row-locked for this transaction; a fresh state if the market is new."""
    await conn.execute(
        "INSERT INTO market_state (market_id, state) VALUES (%s, %s) ON CONFLICT DO NOTHING",
        (market_id, Jsonb(_STATE.dump_python(MarketState(market_id), mode="json"))),
    )
    cur = await conn.execute("SELECT state FROM market_state WHERE market_id = %s FOR UPDATE", (market_id,))
    return _STATE.validate_python((await cur.fetchone())["state"])


async def save_state(conn: AsyncConnection, state: MarketState) -> None:
    await conn.execute(
        "UPDATE market_state SET state = %s, updated_at = now() WHERE market_id = %s",
        (Jsonb(_STATE.dump_python(state, mode="json")), state.market_id),
    )


async def add_participant(conn: AsyncConnection, market_id: str, user_id: str) -> bool:
    cur = await conn.execute(
        "INSERT INTO participants (market_id, user_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
        (market_id, user_id),
    )
    return cur.rowcount == 1


async def save_snapshot(conn: AsyncConnection, v: FeatureVectorComputed) -> None:
    await conn.execute(
        "INSERT INTO feature_snapshots (event_id, market_id, as_of, source_event_id, features) "
        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (
            str(v.event_id),
            v.market_id,
            v.occurred_at,
            v.source_event_id,
            Jsonb(v.features.model_dump(mode="json")),
        ),
    )


async def write_online(redis: Redis, v: FeatureVectorComputed) -> None:
    """The latest vector per market, for low-latency reads (the prediction cache's inputs)."""
    await redis.set(KEYS.key("market", v.market_id), v.model_dump_json())


async def read_online(redis: Redis, market_id: str) -> dict | None:
    raw = await redis.get(KEYS.key("market", market_id))
    return json.loads(raw) if raw else None
