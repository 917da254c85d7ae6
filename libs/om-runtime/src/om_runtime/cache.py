"""Redis access. Every key a service writes starts with its own prefix (`feature:`, `prediction:`, ...).

Reads of a cache (a value another step computed and stored, where a miss means asking the source) are counted in
`om_cache_reads_total{cache, result}` through `CacheReads`, so each service's cache hit rate shows at /metrics:

    ONLINE = CacheReads("feature-online")
    raw = ONLINE.seen(await redis.get(key))   # counts a hit, or a miss for None
"""

from __future__ import annotations

from typing import TypeVar

import redis.asyncio as redis
from prometheus_client import Counter

T = TypeVar("T")

#: One counter for the process, so any read path can count without a registry handed down to it; every
#: `ServiceRuntime` registers it into its own registry (om_runtime.service).
CACHE_READS = Counter(
    "om_cache_reads", "Reads of a Redis cache, by cache and result (hit, miss)", ("cache", "result"), registry=None
)


def create_redis(url: str) -> redis.Redis:
    return redis.from_url(url, decode_responses=True, health_check_interval=30)


class KeySpace:
    """Builds keys under one service's prefix: `KeySpace("feature").key("market", "m1") == "feature:market:m1"`."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def key(self, *parts: object) -> str:
        return ":".join([self.prefix, *map(str, parts)])


class CacheReads:
    """Counts the reads of one cache (create one per cache, at import: the labelled children are looked up once)."""

    def __init__(self, cache: str) -> None:
        self.cache = cache
        self._hit = CACHE_READS.labels(cache, "hit")
        self._miss = CACHE_READS.labels(cache, "miss")

    def seen(self, value: T) -> T:
        """Count `value` as read (None or empty: a miss) and return it unchanged."""
        (self._hit if value else self._miss).inc()
        return value

    def hit(self) -> None:
        self._hit.inc()

    def miss(self) -> None:
        self._miss.inc()
