"""feature's Kafka handlers: apply each event to the market's state, then publish the new feature vector.

All effects of one event happen in one transaction that also marks the event processed; the vector's id is
derived from the source event's, so a redelivery republishes the same vector id (deduped downstream).
"""

from __future__ import annotations

from typing import Any

from om_contracts import (
    FeatureVectorComputed,
    MarketCancelled,
    MarketClosed,
    MarketCreated,
    MarketResolved,
    SignalObserved,
    TradeExecuted,
    derived_event_id,
)
from om_contracts.topics import FEATURE_VECTORS
from om_runtime.db import Database, claim_event
from om_runtime.kafka import EventPublisher
from redis.asyncio import Redis

from om_feature import features, store
from om_feature.features import MarketState

PRODUCER = "feature"
STATUS_AFTER = {MarketClosed: "closed", MarketResolved: "resolved", MarketCancelled: "cancelled"}


class FeatureHandlers:
    def __init__(self, db: Database, redis: Redis, publisher: EventPublisher) -> None:
        self.db = db
        self.redis = redis
        self.publisher = publisher

    async def on_lifecycle(self, event: Any) -> None:
        await self._apply(event)

    async def on_trade(self, event: TradeExecuted) -> None:
        await self._apply(event)

    async def on_signal(self, event: SignalObserved) -> None:
        await self._apply(event)

    async def _apply(self, event: Any) -> None:
        async with self.db.transaction() as conn:
            if not await claim_event(conn, event.event_id):
                return
            state = await store.lock_state(conn, event.market_id)
            if isinstance(event, TradeExecuted):
                new = await store.add_participant(conn, event.market_id, event.user_id)
                state = features.on_trade(
                    state,
                    price_after=event.price_after,
                    amount=event.amount,
                    executed_at=event.occurred_at,
                    new_participant=new,
                )
            elif isinstance(event, SignalObserved):
                state = features.on_signal(state, kind=event.kind, sentiment=event.sentiment)
            elif isinstance(event, MarketCreated):
                state = features.on_created(
                    state, category=event.category, close_at=event.close_at, initial_price=event.initial_price
                )
            else:
                state = features.on_status(state, STATUS_AFTER[type(event)])
            await store.save_state(conn, state)
            if state.status == "open":
                vector = self._vector(state, event)
                await store.save_snapshot(conn, vector)
                await store.write_online(self.redis, vector)
                await self.publisher.publish(FEATURE_VECTORS, vector)

    @staticmethod
    def _vector(state: MarketState, source: Any) -> FeatureVectorComputed:
        return FeatureVectorComputed(
            event_id=derived_event_id(source.event_id, PRODUCER),
            occurred_at=source.occurred_at,
            producer=PRODUCER,
            market_id=state.market_id,
            category=state.category,
            features=features.vector(state, source.occurred_at),
            source_event_id=str(source.event_id),
        )
