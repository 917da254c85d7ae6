"""feature's Kafka handlers: apply each event to the market's state, then publish the new feature vector.

Events arrive in batches applied in one transaction that also marks each event processed (om_runtime.db), so a
redelivered event changes nothing. A vector's id is derived from its source event's: if the transaction fails
after publishing, the redelivery republishes the same vector id, which downstream dedupes.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from redis.asyncio import Redis

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
from om_feature import features, store
from om_feature.features import MarketState
from om_runtime.kafka import EventPublisher

PRODUCER = "feature"
STATUS_AFTER = {MarketClosed: "closed", MarketResolved: "resolved", MarketCancelled: "cancelled"}


class FeatureHandlers:
    def __init__(self, redis: Redis, publisher: EventPublisher) -> None:
        self.redis = redis
        self.publisher = publisher

    async def apply(self, event: Any, conn: AsyncConnection) -> None:
        """Apply a lifecycle event, trade or signal (in the caller's transaction, exactly once)."""
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
