"""feature's own data: checkpoints (market state + consumed offsets, written together), point-in-time snapshots,
resolutions and the training export in PostgreSQL; the latest vector per market in Redis (`feature:` keys)."""

from __future__ import annotations

import base64
import json

# bandit: only checkpoints this service wrote to its own schema are ever unpickled (no outside input)
import pickle  # nosec B403
from array import array
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, cast

from psycopg import AsyncConnection
from redis.asyncio import Redis

from om_feature.engine import Outcome, Vector
from om_feature.features import MarketState
from om_runtime.cache import CacheReads, KeySpace

KEYS = KeySpace("feature")
#: Reads of the online store (`om_cache_reads_total{cache="feature-online"}`): a miss is a market with no vector yet.
ONLINE_READS = CacheReads("feature-online")


def _time(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


# --- checkpoints ----------------------------------------------------------------------------------------


async def save_checkpoint(
    conn: AsyncConnection[Any],
    states: Iterable[MarketState],
    offsets: Mapping[tuple[str, int], int],
    snapshots: Iterable[Vector] = (),
    outcomes: Iterable[Outcome] = (),
    applied: Mapping[int, list[int]] | None = None,
    saved_at: datetime | None = None,
    forget_before: datetime | None = None,
) -> None:
    """Save changed market states, the offsets they reflect, the snapshots and outcomes produced since the last
    checkpoint, and the ids of the events applied since (`applied`, per partition, stamped `saved_at`; rows saved
    before `forget_before` are deleted) — in the caller's transaction, so a crash leaves all of them or none."""
    rows = [(s.market_id, s.partition, pickle.dumps(s, protocol=pickle.HIGHEST_PROTOCOL)) for s in states]
    async with conn.cursor() as cur:
        if rows:
            # Binary parameters, pipelined: a text bytea array is escaped byte by byte in Python (slow).
            await cur.executemany(
                "INSERT INTO market_checkpoint (market_id, partition, state) VALUES (%s, %s, %b) "
                "ON CONFLICT (market_id) DO UPDATE SET partition = excluded.partition, state = excluded.state, "
                "updated_at = now()",
                rows,
            )
        if offsets:
            items = list(offsets.items())
            await cur.execute(
                "INSERT INTO checkpoint_offsets (topic, partition, next_offset) "
                "SELECT * FROM unnest(%s::text[], %s::int[], %s::bigint[]) "
                "ON CONFLICT (topic, partition) DO UPDATE SET next_offset = excluded.next_offset, updated_at = now()",
                ([t for (t, _), _ in items], [p for (_, p), _ in items], [o for _, o in items]),
            )
        await save_snapshots(conn, snapshots)
        await save_outcomes(conn, outcomes)
        if applied:
            stamp = saved_at or datetime.now(UTC)
            await cur.executemany(
                "INSERT INTO applied_ids (partition, saved_at, ids) VALUES (%s, %s, %b)",
                [(p, stamp, array("Q", keys).tobytes()) for p, keys in sorted(applied.items())],
            )
        if forget_before is not None:
            await cur.execute("DELETE FROM applied_ids WHERE saved_at < %s", (forget_before,))


async def load_applied(
    conn: AsyncConnection[Any], partitions: Iterable[int], since: datetime
) -> dict[int, list[tuple[float, list[int]]]]:
    """Per partition, the event ids saved since `since`: (when saved, in epoch seconds; keys), oldest first."""
    cur = await conn.execute(
        "SELECT partition, saved_at, ids FROM applied_ids WHERE partition = ANY(%s) AND saved_at >= %s "
        "ORDER BY saved_at",
        (sorted(set(partitions)), since),
    )
    chunks: dict[int, list[tuple[float, list[int]]]] = {}
    for row in await cur.fetchall():
        keys = array("Q")
        keys.frombytes(row["ids"])
        chunks.setdefault(row["partition"], []).append((row["saved_at"].timestamp(), keys.tolist()))
    return chunks


async def load_states(conn: AsyncConnection[Any], partitions: Iterable[int]) -> list[MarketState]:
    cur = await conn.execute(
        "SELECT state FROM market_checkpoint WHERE partition = ANY(%s)", (sorted(set(partitions)),)
    )
    # bandit: the bytes are this service's own checkpoints, read from its own schema (no outside input)
    return [pickle.loads(row["state"]) for row in await cur.fetchall()]  # nosec B301


async def load_offsets(conn: AsyncConnection[Any], partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
    wanted = set(partitions)
    cur = await conn.execute("SELECT topic, partition, next_offset FROM checkpoint_offsets")
    return {
        (row["topic"], row["partition"]): row["next_offset"]
        for row in await cur.fetchall()
        if (row["topic"], row["partition"]) in wanted
    }


async def reset(conn: AsyncConnection[Any]) -> None:
    """Forget all state, offsets, snapshots and outcomes (the `feature rebuild` command starts from here)."""
    await conn.execute(
        "TRUNCATE market_checkpoint, checkpoint_offsets, feature_snapshots, market_outcomes, applied_ids"
    )


# --- snapshots, outcomes --------------------------------------------------------------------------------


async def save_snapshots(conn: AsyncConnection[Any], snapshots: Iterable[Vector]) -> None:
    rows = [
        (str(v.event_id), v.market_id, _time(v.as_of), v.source_event_id, json.dumps(v.features)) for v in snapshots
    ]
    if not rows:
        return
    await conn.execute(
        "INSERT INTO feature_snapshots (event_id, market_id, as_of, source_event_id, features) "
        "SELECT * FROM unnest(%s::text[], %s::text[], %s::timestamptz[], %s::text[], %s::jsonb[]) "
        "ON CONFLICT DO NOTHING",
        tuple([r[i] for r in rows] for i in range(5)),
    )


async def save_outcomes(conn: AsyncConnection[Any], outcomes: Iterable[Outcome]) -> None:
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO market_outcomes (market_id, category, created_at, close_at, closed_at, resolved_at, "
            "resolution, resolution_price, final_price) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (market_id) DO NOTHING",
            [
                (
                    o.market_id,
                    o.category,
                    _time(o.created_at),
                    _time(o.close_at),
                    _time(o.closed_at),
                    _time(o.resolved_at),
                    o.resolution,
                    o.resolution_price,
                    o.final_price,
                )
                for o in outcomes
            ],
        )


async def load_outcomes(conn: AsyncConnection[Any]) -> list[Outcome]:
    """Every resolution (the category histories are rebuilt from these, whichever process resolved them)."""
    cur = await conn.execute("SELECT * FROM market_outcomes ORDER BY resolved_at, market_id")
    return [
        Outcome(
            market_id=r["market_id"],
            category=r["category"],
            created_at=r["created_at"] and r["created_at"].timestamp(),
            close_at=r["close_at"] and r["close_at"].timestamp(),
            closed_at=r["closed_at"] and r["closed_at"].timestamp(),
            resolved_at=r["resolved_at"].timestamp(),
            resolution=r["resolution"],
            resolution_price=r["resolution_price"],
            final_price=r["final_price"],
        )
        for r in await cur.fetchall()
    ]


# --- the training export (docs/interfaces: feature -> prediction) ---------------------------------------


class BadCursor(ValueError):
    pass


def encode_cursor(resolved_at: datetime, market_id: str, as_of: datetime) -> str:
    raw = json.dumps([resolved_at.isoformat(), market_id, as_of.isoformat()]).encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str, datetime]:
    try:
        resolved_at, market_id, as_of = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return datetime.fromisoformat(resolved_at), str(market_id), datetime.fromisoformat(as_of)
    except (ValueError, TypeError) as exc:
        raise BadCursor("cursor is not one this endpoint returned") from exc


async def training_snapshots(
    conn: AsyncConnection[Any],
    *,
    resolved_after: datetime | None,
    resolved_before: datetime | None,
    cursor: str | None,
    limit: int,
) -> dict[str, Any]:
    """Point-in-time snapshots of resolved markets, each strictly before the market's close and resolution,
    ordered by (resolved_at, market_id, as_of), a page at a time."""
    after = decode_cursor(cursor) if cursor else None
    cur = await conn.execute(
        "SELECT o.market_id, o.category, s.as_of, o.close_at, o.created_at, o.resolved_at, o.resolution, "
        "o.resolution_price, s.features "
        "FROM market_outcomes o JOIN feature_snapshots s ON s.market_id = o.market_id "
        "WHERE o.resolved_at >= coalesce(%(after)s, '-infinity'::timestamptz) "
        "AND o.resolved_at < coalesce(%(before)s, 'infinity'::timestamptz) "
        "AND s.as_of < least(o.resolved_at, coalesce(o.closed_at, 'infinity'), coalesce(o.close_at, 'infinity')) "
        "AND (%(c_res)s::timestamptz IS NULL OR (o.resolved_at, o.market_id, s.as_of) > "
        "(%(c_res)s::timestamptz, %(c_mkt)s::text, %(c_asof)s::timestamptz)) "
        "ORDER BY o.resolved_at, o.market_id, s.as_of LIMIT %(limit)s",
        {
            "after": resolved_after,
            "before": resolved_before,
            "c_res": after and after[0],
            "c_mkt": after and after[1],
            "c_asof": after and after[2],
            "limit": limit + 1,
        },
    )
    rows = await cur.fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    items = [
        {
            "market_id": r["market_id"],
            "category": r["category"],
            "as_of": r["as_of"],
            "close_at": r["close_at"],
            "created_at": r["created_at"],
            "resolved_at": r["resolved_at"],
            "resolution": r["resolution"],
            "resolution_price": r["resolution_price"],
            "features": r["features"],
        }
        for r in rows
    ]
    last = rows[-1] if rows else None
    next_cursor = encode_cursor(last["resolved_at"], last["market_id"], last["as_of"]) if more and last else None
    return {"items": items, "next_cursor": next_cursor}


# --- Redis online store ---------------------------------------------------------------------------------


async def write_online(redis: Redis, vectors: Mapping[str, bytes] | Mapping[str, str]) -> None:
    """The latest vector event (JSON, as bytes or text) per market, in one round trip per batch."""
    if vectors:
        await redis.mset({KEYS.key("market", market_id): body for market_id, body in vectors.items()})


async def read_online(redis: Redis, market_id: str) -> dict[str, Any] | None:
    raw = ONLINE_READS.seen(await redis.get(KEYS.key("market", market_id)))
    return cast(dict[str, Any], json.loads(raw)) if raw else None
