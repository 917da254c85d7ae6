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


async def lock_states(conn: AsyncConnection, market_ids: list[str]) -> dict[str, MarketState]:
    """The markets' states, row-locked for this transaction (in id order, so batches cannot deadlock);
    a fresh state for a market seen for the first time."""
    fresh = [Jsonb(_STATE.dump_python(MarketState(m), mode="json")) for m in market_ids]
    await conn.execute(
        "INSERT INTO market_state (market_id, state) SELECT * FROM unnest(%s::text[], %s::jsonb[]) "
        "ON CONFLICT DO NOTHING",
        (market_ids, fresh),
    )
    cur = await conn.execute(
        "SELECT market_id, state FROM market_state WHERE market_id = ANY(%s) ORDER BY market_id FOR UPDATE",
        (market_ids,),
    )
    return {row["market_id"]: _STATE.validate_python(row["state"]) for row in await cur.fetchall()}


async def save_states(conn: AsyncConnection, states: list[MarketState]) -> None:
    async with conn.cursor() as cur:
        await cur.executemany(
            "UPDATE market_state SET state = %s, updated_at = now() WHERE market_id = %s",
            [(Jsonb(_STATE.dump_python(s, mode="json")), s.market_id) for s in states],
        )


async def add_participants(conn: AsyncConnection, pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """Record (market, user) pairs; return those not seen before."""
    if not pairs:
        return set()
    cur = await conn.execute(
        "INSERT INTO participants (market_id, user_id) SELECT * FROM unnest(%s::text[], %s::text[]) "
        "ON CONFLICT DO NOTHING RETURNING market_id, user_id",
        ([m for m, _ in pairs], [u for _, u in pairs]),
    )
    return {(row["market_id"], row["user_id"]) for row in await cur.fetchall()}


async def save_snapshots(conn: AsyncConnection, vectors: list[FeatureVectorComputed]) -> None:
    if not vectors:
        return
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO feature_snapshots (event_id, market_id, as_of, source_event_id, features) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            [
                (
                    str(v.event_id),
                    v.market_id,
                    v.occurred_at,
                    v.source_event_id,
                    Jsonb(v.features.model_dump(mode="json")),
                )
                for v in vectors
            ],
        )


async def write_online(redis: Redis, vectors: list[FeatureVectorComputed]) -> None:
    """The latest vector per market, for low-latency reads (the prediction cache's inputs)."""
    latest = {KEYS.key("market", v.market_id): v.model_dump_json() for v in vectors}
    if latest:
        await redis.mset(latest)


async def read_online(redis: Redis, market_id: str) -> dict | None:
    raw = await redis.get(KEYS.key("market", market_id))
    return json.loads(raw) if raw else None
