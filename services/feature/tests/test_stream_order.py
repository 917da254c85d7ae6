"""A consumed batch is applied in event-time order across topics, so no topic's events turn late for their markets
only because the batch holds another topic's later events (the import sends trades, then signals, round by round)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from om_contracts import MarketCreated, SignalObserved, TradeExecuted
from om_contracts.codec import encode
from om_contracts.topics import MARKET_LIFECYCLE, MARKET_SIGNALS, MARKET_TRADES
from om_feature.engine import Engine
from om_feature.stream import Delivery, StatefulLoop

T0 = datetime(2025, 3, 1, tzinfo=UTC)


def record(topic: str, offset: int, event: Any) -> ConsumerRecord[bytes, bytes]:
    value = encode(event)
    return ConsumerRecord(topic, 0, offset, 0, 0, b"m", value, None, 1, len(value), [])


def trade(s: float) -> TradeExecuted:
    return TradeExecuted(
        occurred_at=T0 + timedelta(seconds=s), producer="t", trade_id=f"t{s}", market_id="m", user_id="u",
        outcome="YES", amount=10.0, shares=20.0, price_before=0.5, price_after=0.6,
    )  # fmt: skip


def signal(s: float) -> SignalObserved:
    return SignalObserved(
        occurred_at=T0 + timedelta(seconds=s), producer="t", signal_id=f"s{s}", market_id="m", kind="news",
        source="wire", text="x", sentiment=0.5,
    )  # fmt: skip


def test_a_batch_is_applied_in_event_time_order_across_topics_keeping_each_partitions_order() -> None:
    engine = Engine()
    applied: list[Delivery] = []

    async def process(deliveries: list[Delivery]) -> list[tuple[Any, str]]:
        applied.extend(deliveries)
        engine.process((d.event, d.partition, d) for d in deliveries)
        return []

    loop = StatefulLoop("127.0.0.1:1", (MARKET_LIFECYCLE, MARKET_TRADES, MARKET_SIGNALS), process, None, None,  # type: ignore[arg-type]
                        group="feature")  # fmt: skip
    created = MarketCreated(
        occurred_at=T0, producer="t", market_id="m", question="q?", category="c",
        close_at=T0 + timedelta(days=2), initial_price=0.4,
    )  # fmt: skip
    # Two import rounds an hour apart in one batch: trades 0 s and 3600 s, signals 60 s and 3660 s.
    trades = [record(MARKET_TRADES.name, n, trade(s)) for n, s in enumerate((0, 3600))]
    signals = [record(MARKET_SIGNALS.name, n, signal(s)) for n, s in enumerate((60, 3660))]
    lifecycle = [record(MARKET_LIFECYCLE.name, 0, created)]
    batch = {
        TopicPartition(MARKET_TRADES.name, 0): trades,
        TopicPartition(MARKET_SIGNALS.name, 0): signals,
        TopicPartition(MARKET_LIFECYCLE.name, 0): lifecycle,
    }
    loop._owned = set(batch)
    asyncio.run(loop._handle(batch))
    assert [d.event.occurred_at for d in applied] == [T0 + timedelta(seconds=s) for s in (0, 0, 60, 3600, 3660)]
    assert engine.late == {"trade": 0, "signal": 0}  # trades first, then signals: the 60 s signal was 3540 s late
    assert len(engine.markets["m"].news) == 2
