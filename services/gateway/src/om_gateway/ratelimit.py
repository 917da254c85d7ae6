"""Rate limits per principal and per client IP, set per role, counted in Redis (moving window), so every replica
shares the counts. If Redis is unreachable the request is let through and a warning logged: losing the limiter must
not take the API down.

`limits` parses the limits and names the keys; the counting is one Lua script for all of a request's identities
(one round trip instead of one per identity, plus one more for a refusal's Retry-After). It keeps `limits`' moving
window layout: a list per key of the newest hits' times, trimmed to the limit. A script may also read one hash field
in the same round trip (the gateway's cached prediction), so a cached read costs a single round trip in all."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

PREFIX = "gateway:ratelimit"

# KEYS: one list per identity, then (when ARGV[4] is 1) a hash to read. ARGV: now, limit, window (s), read?
# Identities are counted in order; the first one over its limit stops the count (those after it are not charged)
# and its oldest counted hit, which sets when a slot frees, is returned.
_HIT = """
local now, limit, expiry, read = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4] == '1'
local identities = #KEYS - (read and 1 or 0)
for i = 1, identities do
  local oldest = redis.call('LINDEX', KEYS[i], limit - 1)
  if oldest and tonumber(oldest) >= now - expiry then
    return {i, oldest}
  end
  redis.call('LPUSH', KEYS[i], ARGV[1])
  redis.call('LTRIM', KEYS[i], 0, limit - 1)
  redis.call('EXPIRE', KEYS[i], expiry)
end
if read then
  return {0, '', redis.call('HGET', KEYS[#KEYS], ARGV[5])}
end
return {0, ''}
"""


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after_s: int = 0
    #: The hash field asked for with the hit (None when absent, not asked, refused or Redis failed).
    read: bytes | None = None


class RateLimits:
    def __init__(self, limits_by_role: dict[str, str], redis: Redis, prefix: str = PREFIX) -> None:
        self.items: dict[str, RateLimitItem] = {role: parse(text) for role, text in limits_by_role.items()}
        self.redis = redis
        self.prefix = prefix
        self.script = redis.register_script(_HIT)

    @classmethod
    def over_redis(cls, limits_by_role: dict[str, str], redis_url: str) -> RateLimits:
        return cls(limits_by_role, Redis.from_url(redis_url))

    async def connect(self) -> None:
        """Open the first Redis connection and load the script now (at start-up), not on the first request; with
        Redis down, only log (requests are let through until it is back)."""
        try:
            await self.redis.script_load(_HIT)
        except (RedisError, OSError) as exc:
            log.warning("rate limiter unavailable at start-up: %r", exc)

    async def hit(self, role: str, *identities: str, read: tuple[str, str] | None = None) -> Verdict:
        """Count one request for each identity (e.g. the IP, then the principal) under `role`'s limit, and read
        hash field `read` = (key, field) in the same round trip when the request is allowed."""
        item = self.items.get(role) or self.items["anonymous"]
        keys = [f"{self.prefix}:{item.key_for(role, identity)}" for identity in identities]
        now, expiry = time.time(), item.get_expiry()
        args: list[str | int | float] = [now, item.amount, expiry, 0]
        if read is not None:
            keys.append(read[0])
            args[3:] = [1, read[1]]
        try:
            refused, oldest, *value = await self.script(keys=keys, args=args)
        except (RedisError, OSError) as exc:  # Redis down: fail open, loudly
            log.warning("rate limiter unavailable, request allowed: %r", exc)
            return Verdict(True)
        if refused:
            return Verdict(False, max(1, math.ceil(float(oldest) + expiry - now)))
        return Verdict(True, read=value[0] if value else None)
