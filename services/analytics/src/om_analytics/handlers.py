"""analytics' Kafka handlers and its system-metrics publisher.

Events arrive in batches applied in one transaction that also marks each processed (om_runtime.db). A batch
updates the read models with a fixed number of statements, then each touched market's new metrics are
published once, under an id derived from its last event in the batch (a redelivery is deduped downstream).
System metrics are published by a loop, at most once per interval: a snapshot, not a per-trade stream.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from psycopg import AsyncConnection

from om_analytics import store
from om_contracts import (
    MarketCancelled,
    MarketClosed,
    MarketCreated,
    MarketMetricsUpdated,
    MarketResolved,
    PredictionMade,
    SystemMetricsUpdated,
    Topic,
    TradeExecuted,
    derived_event_id,
    utcnow,
)
from om_contracts.topics import ANALYTICS_MARKET, ANALYTICS_SYSTEM
from om_runtime.db import Database
from om_runtime.kafka import EventPublisher

PRODUCER = "analytics"
STATUS_AFTER = {MarketClosed: "closed", MarketResolved: "resolved", MarketCancelled: "cancelled"}


class AnalyticsHandlers:
    def __init__(self, db: Database, publisher: EventPublisher, top_markets: int) -> None:
        self.db = db
        self.publisher = publisher
        self.top_markets = top_markets
        self.changed = asyncio.Event()

    async def apply_batch(self, events: list[tuple[Topic, Any]], conn: AsyncConnection) -> None:
        """Apply a batch of new lifecycle events, trades and predictions in the caller's transaction, then
        publish the metrics of each market the batch touched, once."""
        for _, event in events:  # lifecycle events are rare and their order matters: one at a time
            if isinstance(event, MarketCreated):
                await store.record_created(conn, event)
            elif type(event) in STATUS_AFTER:
                await store.record_status(conn, event.market_id, STATUS_AFTER[type(event)])
        await store.record_trades(conn, [e for _, e in events if isinstance(e, TradeExecuted)])
        await store.record_predictions(conn, [e for _, e in events if isinstance(e, PredictionMade)])
        last_event = {event.market_id: event for _, event in events}
        for market_id, metrics in (await store.markets_metrics(conn, list(last_event), utcnow())).items():
            source = last_event[market_id]
            update = MarketMetricsUpdated(
                # Derived from the market's last event in the batch: a redelivered batch gives the same id.
                event_id=derived_event_id(source.event_id, PRODUCER),
                occurred_at=source.occurred_at,
                producer=PRODUCER,
                **metrics,
            )
            await self.publisher.publish(ANALYTICS_MARKET, update)

    async def system_snapshot(self) -> SystemMetricsUpdated:
        now = utcnow()
        async with self.db.transaction() as conn:
            return SystemMetricsUpdated(
                occurred_at=now,
                producer=PRODUCER,
                system_metrics=await store.system_metrics(conn, now),
                top_markets=await store.top_markets(conn, now, self.top_markets),
            )

    async def publish_system_metrics(self, interval_s: float, heartbeat_s: float) -> None:
        """Loop: publish a snapshot after changes (at most every `interval_s`), and every `heartbeat_s` anyway."""
        last = 0.0
        while True:
            try:
                await asyncio.wait_for(self.changed.wait(), timeout=max(0.0, heartbeat_s - (time.monotonic() - last)))
            except TimeoutError:
                pass
            self.changed.clear()
            await self.publisher.publish(ANALYTICS_SYSTEM, await self.system_snapshot())
            last = time.monotonic()
            await asyncio.sleep(interval_s)
