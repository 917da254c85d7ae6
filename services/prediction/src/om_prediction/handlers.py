"""prediction's Kafka handlers: score feature vectors in micro-batches, make a final prediction when a market
resolves or is cancelled, re-score every open market after a model swap."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from psycopg.rows import DictRow
from redis.asyncio import Redis

from om_contracts import (
    FeatureContribution,
    FeatureVectorComputed,
    MarketCancelled,
    MarketFeatures,
    MarketResolved,
    PredictionMade,
    Topic,
    derived_event_id,
)
from om_contracts.topics import PREDICTIONS
from om_prediction import scoring, store
from om_prediction.metrics import PredictionMetrics
from om_prediction.serving import ModelHolder
from om_runtime.kafka import EventPublisher

PRODUCER = "prediction"
log = logging.getLogger("om_prediction.handlers")


def prediction_for(vector: FeatureVectorComputed, score: scoring.Score | None = None, **extra: Any) -> PredictionMade:
    score = score or scoring.baseline(vector.features)
    return PredictionMade(
        event_id=extra.pop("event_id", None) or derived_event_id(vector.event_id, PRODUCER),
        occurred_at=vector.occurred_at,
        producer=PRODUCER,
        market_id=vector.market_id,
        probability=score.probability,
        confidence=score.confidence,
        risk_level=score.risk_level,
        model_version=score.model_version,
        contributions=[FeatureContribution(**c._asdict()) for c in score.contributions],
        features_as_of=vector.occurred_at,
        risk_reasons=list(score.risk_reasons),
        market_price=vector.features.current_price,
        **extra,
    )


class PredictionHandlers:
    def __init__(
        self,
        redis: Redis,
        publisher: EventPublisher,
        cache_ttl_s: int,
        models: ModelHolder,
        metrics: PredictionMetrics | None = None,
    ) -> None:
        self.metrics = metrics
        self.redis = redis
        self.publisher = publisher
        self.cache_ttl_s = cache_ttl_s
        self.models = models

    def predict(self, vectors: list[FeatureVectorComputed], **extra: Any) -> list[PredictionMade]:
        model, version = self.models.current  # one model for the whole batch, even if a swap lands meanwhile
        scores = scoring.score_batch(model, version, [v.features for v in vectors])
        return [prediction_for(v, s, **extra) for v, s in zip(vectors, scores, strict=True)]

    async def apply_batch(self, events: list[tuple[Topic, Any]], conn: store.Conn) -> None:
        """Predict each new vector and settle resolved/cancelled markets, in the caller's transaction."""
        vectors = [e for _, e in events if isinstance(e, FeatureVectorComputed)]
        settled = [e for _, e in events if isinstance(e, MarketResolved | MarketCancelled)]
        predictions = self.predict(vectors)
        if vectors:
            await store.remember_vectors(conn, vectors)
        if settled:
            predictions += await self._finals(conn, settled)
        await self._emit(conn, predictions)

    async def _finals(self, conn: store.Conn, settled: list[Any]) -> list[PredictionMade]:
        rows = {r["market_id"]: r for r in await store.latest_vectors(conn, [e.market_id for e in settled])}
        finals, outcomes = [], []
        for event in settled:
            row = rows.get(event.market_id)
            if row is None:
                continue
            vector = _vector(row)
            (final,) = self.predict([vector], final=True, event_id=derived_event_id(event.event_id, PRODUCER))
            finals.append(final)
            if isinstance(event, MarketResolved) and event.resolution in ("YES", "NO"):
                outcomes.append(
                    (
                        event.market_id,
                        final.model_version,
                        final.probability,
                        vector.features.current_price,
                        event.resolution_price,
                    )
                )
        await store.record_outcomes(conn, outcomes)
        await store.forget_vectors(conn, [e.market_id for e in settled])
        return finals

    async def rescore_open(self, conn: store.Conn) -> int:
        """After a swap: a prediction by the new model for every open market, from its latest vector."""
        _, version = self.models.current
        vectors = [_vector(r) for r in await store.latest_vectors(conn)]
        predictions = [
            p.model_copy(update={"event_id": derived_event_id(v.event_id, f"{PRODUCER}:{version}")})
            for v, p in zip(vectors, self.predict(vectors), strict=True)
        ]
        await self._emit(conn, predictions)
        return len(predictions)

    async def _emit(self, conn: store.Conn, predictions: list[PredictionMade]) -> None:
        if not predictions:
            return
        # Three independent round trips (PostgreSQL, Redis, Kafka) at once rather than one after another: under a
        # backlog they were most of a batch's time, with prediction's CPU mostly idle (issue 9/5). Nothing changes
        # for exactly-once: all three still finish (the publishes confirmed) before the transaction commits, and a
        # failure of any rolls it back; the cache only ever takes a newer prediction, so a retry rewrites it.
        await asyncio.gather(
            store.save(conn, predictions),
            store.cache_latest(self.redis, predictions, self.cache_ttl_s),
            _publish_all(self.publisher, predictions),
        )
        if self.metrics is not None:
            self.metrics.published(predictions)


async def _publish_all(publisher: EventPublisher, predictions: list[PredictionMade]) -> None:
    for prediction in predictions:  # in order: each is queued before the next
        await publisher.publish(PREDICTIONS, prediction)


def _vector(row: DictRow) -> FeatureVectorComputed:
    """A stored latest vector as the event it came from (same id, so predictions from it keep their ids)."""
    return FeatureVectorComputed(
        event_id=row["source_event_id"],
        occurred_at=row["as_of"],
        producer="feature",
        market_id=row["market_id"],
        features=MarketFeatures.model_validate(row["features"]),
        source_event_id=row["source_event_id"],
    )
