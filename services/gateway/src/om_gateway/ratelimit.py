"""Rate limits per principal and per client IP, set per role, counted in Redis by `limits` (moving window),
so every replica shares the counts. If Redis is unreachable the request is let through and a warning logged:
losing the limiter must not take the API down."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after_s: int = 0


class RateLimits:
    def __init__(self, limits_by_role: dict[str, str], storage: Storage) -> None:
        self.items: dict[str, RateLimitItem] = {role: parse(text) for role, text in limits_by_role.items()}
        self.limiter = MovingWindowRateLimiter(storage)

    @classmethod
    def over_redis(cls, limits_by_role: dict[str, str], redis_url: str) -> RateLimits:
        storage = RedisStorage(f"async+{redis_url}", implementation="redispy", key_prefix="gateway:ratelimit")
        return cls(limits_by_role, storage)

    async def hit(self, role: str, *identities: str) -> Verdict:
        """Count one request for each identity (e.g. the principal and the IP) under `role`'s limit."""
        item = self.items.get(role) or self.items["anonymous"]
        try:
            for identity in identities:
                if not await self.limiter.hit(item, role, identity):
                    stats = await self.limiter.get_window_stats(item, role, identity)
                    return Verdict(False, max(1, math.ceil(stats.reset_time - time.time())))
        except Exception as exc:  # noqa: BLE001 - Redis down: fail open, loudly
            log.warning("rate limiter unavailable, request allowed: %r", exc)
        return Verdict(True)
