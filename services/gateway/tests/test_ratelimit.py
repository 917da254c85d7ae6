"""The rate limiter over real Redis: a request's identities are counted in one round trip, in order, the first one
over its limit stops the count, a refusal says when a slot frees, and a hash field can be read in the same trip."""

from __future__ import annotations

import uuid

import pytest
from redis.asyncio import Redis

from om_gateway.ratelimit import RateLimits

pytestmark = pytest.mark.integration


async def test_identities_are_counted_in_order_and_a_read_rides_along(redis_url: str) -> None:
    run = uuid.uuid4().hex[:8]
    prefix = f"test-ratelimit-{run}"
    redis = Redis.from_url(redis_url)
    limits = RateLimits({"anonymous": "1/minute", "viewer": "2/minute"}, redis, prefix=prefix)
    cache = f"test-cache-{run}"
    await redis.hset(cache, "prediction", b'{"p": 1}')
    try:
        ip, other_ip, who = f"ip:{run}", f"ip:other-{run}", f"principal:{run}"
        first = await limits.hit("viewer", ip, who, read=(cache, "prediction"))
        assert first.allowed and first.read == b'{"p": 1}'
        assert (await limits.hit("viewer", ip, who, read=(cache, "absent"))).read is None
        refused = await limits.hit("viewer", ip, who, read=(cache, "prediction"))
        assert not refused.allowed and refused.read is None and 1 <= refused.retry_after_s <= 60
        # The IP refused first, so the principal was not charged for that request: from another IP it is now refused
        # at its own limit of 2, and that refusal did not charge the other IP.
        assert not (await limits.hit("viewer", other_ip, who)).allowed
        assert await redis.llen(f"{prefix}:{limits.items['viewer'].key_for('viewer', other_ip)}") == 1
        assert await redis.llen(f"{prefix}:{limits.items['viewer'].key_for('viewer', who)}") == 2
        # An unknown role gets the anonymous limit.
        assert (await limits.hit("nobody", f"ip:anon-{run}")).allowed
        assert not (await limits.hit("nobody", f"ip:anon-{run}")).allowed
    finally:
        keys = [k async for k in redis.scan_iter(f"{prefix}:*")]
        await redis.delete(cache, *keys)
        await redis.aclose()


async def test_redis_down_lets_requests_through() -> None:
    from om_cli.embedded import free_port

    limits = RateLimits({"anonymous": "1/minute"}, Redis.from_url(f"redis://127.0.0.1:{free_port()}/0"))
    verdicts = [await limits.hit("anonymous", "ip:x", read=("k", "f")) for _ in range(3)]
    assert [v.allowed for v in verdicts] == [True] * 3
    await limits.redis.aclose()
