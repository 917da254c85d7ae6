"""A deterministic synthetic market stream (creations, trades, resolutions) as contract-valid JSON bytes, for the
feature benchmark and the crash/rebalance tests. Built as text, not models, so 200,000 trades take a second."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaProducer

T0 = datetime(2026, 1, 1, tzinfo=UTC)
_IDS = uuid.UUID("3e1f0c55-2a7b-4c9d-8e6f-1a2b3c4d5e6f")


@dataclass(frozen=True)
class StreamSpec:
    markets: int = 500
    trades: int = 200_000
    users: int = 20_000
    categories: int = 8
    spacing_ms: float = 1.0  # event time between consecutive trades, platform-wide
    resolve_every: int = 0  # resolve every n-th market after its trades (0: none)
    seed: int = 7


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _id(*parts: object) -> str:
    return str(uuid.uuid5(_IDS, ":".join(map(str, parts))))


def market_id(i: int) -> str:
    return f"bench-{i:06d}"


def stream(spec: StreamSpec) -> Iterator[tuple[str, bytes, bytes]]:
    """(topic, key, value) in production order: every creation, then the trades, then any resolutions."""
    # bandit: synthetic test data, reproducible from its seed; nothing secret
    rng = random.Random(spec.seed)  # nosec B311
    produced = _iso(T0)
    for m in range(spec.markets):
        mid = market_id(m)
        body = {
            "event_id": _id("created", mid),
            "event_type": "market.created",
            "occurred_at": _iso(T0),
            "produced_at": produced,
            "producer": "bench",
            "market_id": mid,
            "question": f"Will {mid} resolve YES?",
            "category": f"cat-{m % spec.categories}",
            "close_at": _iso(T0 + timedelta(days=30)),
            "initial_price": 0.5,
        }
        yield "market.lifecycle.v1", mid.encode(), json.dumps(body).encode()
    prices = [0.5] * spec.markets
    counts = [0] * spec.markets
    template = (
        '{"event_id":"%s","event_type":"trade.executed","occurred_at":"%s","produced_at":"%s","producer":"bench",'
        '"trade_id":"t%d","market_id":"%s","user_id":"u%d","outcome":"%s","side":"BUY","amount":%.2f,'
        '"shares":%.4f,"price_before":%.4f,"price_after":%.4f}'
    )
    step = timedelta(milliseconds=spec.spacing_ms)
    for i in range(spec.trades):
        m = rng.randrange(spec.markets)
        mid = market_id(m)
        before = prices[m]
        after = min(0.99, max(0.01, before + rng.uniform(-0.02, 0.02)))
        prices[m] = after
        counts[m] += 1
        amount = round(rng.uniform(1.0, 200.0), 2)
        when = _iso(T0 + timedelta(minutes=1) + step * i)
        value = template % (
            _id("trade", i),
            when,
            produced,
            i,
            mid,
            rng.randrange(spec.users),
            "YES" if after >= before else "NO",
            amount,
            amount / max(after, 0.01),
            round(before, 4),
            round(after, 4),
        )
        yield "market.trades.v1", mid.encode(), value.encode()
    if spec.resolve_every:
        end = T0 + timedelta(minutes=2) + step * spec.trades
        for m in range(0, spec.markets, spec.resolve_every):
            mid = market_id(m)
            outcome = "YES" if prices[m] >= 0.5 else "NO"
            body = {
                "event_id": _id("resolved", mid),
                "event_type": "market.resolved",
                "occurred_at": _iso(end),
                "produced_at": produced,
                "producer": "bench",
                "market_id": mid,
                "resolution": outcome,
                "resolution_price": 1.0 if outcome == "YES" else 0.0,
            }
            yield "market.lifecycle.v1", mid.encode(), json.dumps(body).encode()


def trades_per_market(spec: StreamSpec) -> dict[str, int]:
    counts: dict[str, int] = {}
    for topic, key, _ in stream(spec):
        if topic == "market.trades.v1":
            counts[key.decode()] = counts.get(key.decode(), 0) + 1
    return counts


async def produce(bootstrap: str, messages: Iterator[tuple[str, bytes, bytes]] | list[tuple[str, bytes, bytes]]) -> int:
    """Publish (topic, key, value) triples fast (batched, acknowledged in chunks); return how many. Creates the
    registry's topics first, so none is auto-created with the broker's default partition count."""
    from om_runtime.kafka import ensure_topics

    await ensure_topics(bootstrap)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=False, linger_ms=20, max_batch_size=1024 * 1024
    )
    await producer.start()
    try:
        pending = []
        sent = 0
        for topic, key, value in messages:
            sent += 1
            pending.append(await producer.send(topic, value, key=key))
            if len(pending) >= 20_000:
                for future in pending:
                    await future
                pending = []
        for future in pending:
            await future
        return sent
    finally:
        await producer.stop()
