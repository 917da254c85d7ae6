"""prediction's Kafka handler: score each feature vector, record it, publish the prediction."""

from __future__ import annotations

from psycopg import AsyncConnection
from redis.asyncio import Redis

from om_contracts import FeatureVectorComputed, PredictionMade, Topic, derived_event_id
from om_contracts.topics import PREDICTIONS
from om_prediction import scoring, store
from om_runtime.kafka import EventPublisher

PRODUCER = "prediction"


def prediction_for(vector: FeatureVectorComputed) -> PredictionMade:
    score = scoring.baseline(vector.features)
    return PredictionMade(
        event_id=derived_event_id(vector.event_id, PRODUCER),
        occurred_at=vector.occurred_at,
        producer=PRODUCER,
        market_id=vector.market_id,
        probability=score.probability,
        confidence=score.confidence,
        risk_level=score.risk_level,
        model_version=score.model_version,
        contributions=score.contributions,
        features_as_of=vector.occurred_at,
    )


class PredictionHandlers:
    def __init__(self, redis: Redis, publisher: EventPublisher, cache_ttl_s: int) -> None:
        self.redis = redis
        self.publisher = publisher
        self.cache_ttl_s = cache_ttl_s

    async def apply_batch(self, events: list[tuple[Topic, FeatureVectorComputed]], conn: AsyncConnection) -> None:
        """Predict each new vector (in the caller's transaction): record, cache and publish the predictions."""
        predictions = [prediction_for(vector) for _, vector in events]
        await store.save(conn, predictions)
        await store.cache_latest(self.redis, predictions, self.cache_ttl_s)
        for prediction in predictions:
            await self.publisher.publish(PREDICTIONS, prediction)
