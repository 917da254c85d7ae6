"""feature's Kafka handler: apply each event to its market's state, then publish the new feature vector.

Events arrive in batches applied in one transaction that also marks each event processed (om_runtime.db), so a
redelivered event changes nothing. A vector's id is derived from its source event's: if the transaction fails
after publishing, the redelivery republishes the same vector id, which downstream dedupes.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from redis.asyncio import Redis

from om_contracts import FeatureVectorComputed, Topic, TradeExecuted, derived_event_id
from om_contracts.topics import FEATURE_VECTORS
from om_feature import features, store
from om_feature.features import MarketState
from om_runtime.kafka import EventPublisher

PRODUCER = "feature"


class FeatureHandlers:
    def __init__(self, redis: Redis, publisher: EventPublisher) -> None:
        self.redis = redis
        self.publisher = publisher

    async def apply_batch(self, events: list[tuple[Topic, Any]], conn: AsyncConnection) -> None:
        """Apply a batch of lifecycle events, trades and signals (new ones, in order, in the caller's
        transaction): each market's state is loaded and saved once per batch, and each event that leaves its
        market open yields a feature vector."""
        states = await store.lock_states(conn, sorted({event.market_id for _, event in events}))
        trades = [e for _, e in events if isinstance(e, TradeExecuted)]
        newcomers = await store.add_participants(conn, [(t.market_id, t.user_id) for t in trades])
        vectors = []
        for _, event in events:
            new_participant = False
            if isinstance(event, TradeExecuted) and (event.market_id, event.user_id) in newcomers:
                newcomers.discard((event.market_id, event.user_id))  # only their first trade is new
                new_participant = True
            state = states[event.market_id] = features.apply(
                states[event.market_id], event, new_participant=new_participant
            )
            if state.status == "open":
                vectors.append(self._vector(state, event))
        await store.save_states(conn, list(states.values()))
        await store.save_snapshots(conn, vectors)
        await store.write_online(self.redis, vectors)
        for vector in vectors:
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
