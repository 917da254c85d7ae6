"""Hot read models in Redis for the gateway: the latest market, user, system and health snapshots, the
leaderboards and the cached calibration. PostgreSQL keeps the same snapshots; Redis is the fast copy."""

from __future__ import annotations

import json
from typing import Any, cast

import redis.asyncio as redis

from om_runtime.cache import CacheReads, KeySpace

LEADERBOARDS = ("pnl", "volume", "success_rate")
# Hits and misses at /metrics (om_cache_reads_total), which platform health turns into a cache hit rate.
MARKET_READS = CacheReads("analytics-market")
CALIBRATION_READS = CacheReads("analytics-calibration")


def dumps(value: Any) -> str:
    """A snapshot's JSON text, the same for equal content (sorted keys): written once to PostgreSQL and Redis,
    and the source of the update's content-derived id."""
    return json.dumps(value, default=str, separators=(",", ":"), sort_keys=True)


class HotModels:
    def __init__(self, client: redis.Redis, prefix: str = "analytics") -> None:
        self.redis = client
        self.keys = KeySpace(prefix)

    async def put_markets(self, texts: dict[str, str]) -> None:
        """Market snapshots, as their JSON texts (`dumps`)."""
        if texts:
            await self.redis.mset({self.keys.key("market", m): text for m, text in texts.items()})

    async def put_users(self, snapshots: dict[str, dict[str, Any]], texts: dict[str, str]) -> None:
        """User snapshots (their JSON texts from `dumps`) and the leaderboards."""
        if not snapshots:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.mset({self.keys.key("user", u): texts[u] for u in snapshots})
            pipe.zadd(self.keys.key("leaderboard", "pnl"), {u: s["total_pnl"] for u, s in snapshots.items()})
            pipe.zadd(self.keys.key("leaderboard", "volume"), {u: s["total_volume"] for u, s in snapshots.items()})
            rated = {u: s["success_rate"] for u, s in snapshots.items() if s["success_rate"] is not None}
            if rated:
                pipe.zadd(self.keys.key("leaderboard", "success_rate"), rated)
            await pipe.execute()

    async def market(self, market_id: str) -> dict[str, Any] | None:
        snapshot: dict[str, Any] | None = _loads(await self.redis.get(self.keys.key("market", market_id)))
        return MARKET_READS.seen(snapshot)

    async def put(self, name: str, value: Any, ttl_s: float | None = None) -> None:
        await self.redis.set(self.keys.key(name), dumps(value), px=int(ttl_s * 1000) if ttl_s else None)

    async def bump(self, name: str) -> None:
        """Say that what `name` caches changed (after the change committed): a cached copy from before is no
        longer served, even one a reader that began before the change stores after this."""
        await self.redis.incr(self.keys.key(name, "generation"))

    async def get_current(self, name: str) -> tuple[int, Any]:
        """The generation of `name` now, and its cached value if that was computed in this generation."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(self.keys.key(name, "generation"))
            pipe.get(self.keys.key(name))
            generation, raw = await pipe.execute()
        cached = _loads(raw)
        now = int(generation or 0)
        if isinstance(cached, dict) and cached.get("generation") == now:
            CALIBRATION_READS.hit()
            return now, cached["value"]
        CALIBRATION_READS.miss()
        return now, None

    async def put_current(self, name: str, generation: int, value: Any, ttl_s: float) -> None:
        """Cache `value` as computed in `generation` (read with `get_current` before computing it)."""
        await self.put(name, {"generation": generation, "value": value}, ttl_s=ttl_s)

    async def get(self, name: str) -> Any:
        return _loads(await self.redis.get(self.keys.key(name)))

    async def leaderboard(self, by: str, limit: int) -> list[tuple[str, float]]:
        # With scores, redis-py answers (member, score) pairs; its annotation covers every variant of the call.
        rows = cast(
            "list[tuple[str | bytes, float]]",
            await self.redis.zrevrange(self.keys.key("leaderboard", by), 0, limit - 1, withscores=True),
        )
        return [(_text(member), float(score)) for member, score in rows]


def _loads(raw: str | bytes | None) -> Any:
    return None if raw is None else json.loads(raw)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
