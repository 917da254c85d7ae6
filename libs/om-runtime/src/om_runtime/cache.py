"""Redis access. Every key a service writes starts with its own prefix (`feature:`, `prediction:`, ...)."""

from __future__ import annotations

import redis.asyncio as redis


def create_redis(url: str) -> redis.Redis:
    return redis.from_url(url, decode_responses=True, health_check_interval=30)


class KeySpace:
    """Builds keys under one service's prefix: `KeySpace("feature").key("market", "m1") == "feature:market:m1"`."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def key(self, *parts: object) -> str:
        return ":".join([self.prefix, *map(str, parts)])
