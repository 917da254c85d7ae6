"""analytics' Kafka handlers and its system-metrics publisher.

Events arrive in batches applied in one transaction that also marks each processed (om_runtime.db). Each
updates the read models, then the market's new metrics are published under an id derived from the event's
(so a redelivery is deduped downstream).
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

    async def on_lifecycle(self, event: Any, conn: AsyncConnection) -> None:
        if isinstance(event, MarketCreated):
            await store.record_created(conn, event)
        else:
            await store.record_status(conn, event.market_id, STATUS_AFTER[type(event)])
        await self._publish_market(event, conn)

    async def on_trade(self, event: TradeExecuted, conn: AsyncConnection) -> None:
        await store.record_trade(conn, event)
        await self._publish_market(event, conn)

    async def on_prediction(self, event: PredictionMade, conn: AsyncConnection) -> None:
        await store.record_prediction(conn, event)
        await self._publish_market(event, conn)

    async def _publish_market(self, event: Any, conn: AsyncConnection) -> None:
        metrics = await store.market_metrics(conn, event.market_id, utcnow())
        if metrics is not None:
            update = MarketMetricsUpdated(
                event_id=derived_event_id(event.event_id, PRODUCER),
                occurred_at=event.occurred_at,
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
