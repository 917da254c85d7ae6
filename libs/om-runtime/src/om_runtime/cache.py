"""Redis access. Every key a service writes starts with its own prefix (`feature:`, `prediction:`, ...).

Reads of a cache (a value another step computed and stored, where a miss means asking the source) are counted in
`om_cache_reads_total{cache, result}` through `CacheReads`, so each service's cache hit rate shows at /metrics:

    ONLINE = CacheReads("feature-online")
    raw = ONLINE.seen(await redis.get(key))   # counts a hit, or a miss for None
"""

from __future__ import annotations

import redis.asyncio as redis

# The counting lives in om_runtime.metrics, which services without Redis import too (the runtime registers it).
from om_runtime.metrics import CACHE_READS as CACHE_READS
from om_runtime.metrics import CacheReads as CacheReads


def create_redis(url: str) -> redis.Redis:
    return redis.from_url(url, decode_responses=True, health_check_interval=30)


class KeySpace:
    """Builds keys under one service's prefix: `KeySpace("feature").key("market", "m1") == "feature:market:m1"`."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def key(self, *parts: object) -> str:
        return ":".join([self.prefix, *map(str, parts)])
