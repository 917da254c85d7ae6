"""prediction against real Kafka, PostgreSQL and Redis: each feature vector yields one labelled prediction,
served from the cache and the history; a redelivered vector is not predicted twice."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from redis.asyncio import Redis

from om_cli.testing import app_client, consume_until, eventually, produce
from om_contracts import FeatureVectorComputed, MarketFeatures, encode
from om_contracts.caches import PREDICTION_LATEST_FIELD, prediction_latest_key
from om_prediction.app import create_app
from om_prediction.settings import PredictionSettings

pytestmark = pytest.mark.integration


def vector(market: str, price: float, at: datetime) -> FeatureVectorComputed:
    features = MarketFeatures(
        current_price=price, total_volume=100, participant_count=12, trade_count=20, days_remaining=3
    )
    return FeatureVectorComputed(occurred_at=at, producer="t", market_id=market, features=features, source_event_id="s")


async def test_vectors_become_predictions_once(
    kafka_bootstrap: str, database_url: str, redis_url: str, tmp_path: Path
) -> None:
    settings = PredictionSettings(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, DATABASE_URL=database_url, REDIS_URL=redis_url, models_dir=tmp_path
    )
    market = f"m-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    newer, older = vector(market, 0.9, now), vector(market, 0.3, now - timedelta(minutes=5))
    async with app_client(create_app(settings)) as client:
        # The newer vector arrives first; the late older one must not replace it as "latest".
        await produce(
            kafka_bootstrap,
            "feature.vectors.v1",
            [encode(newer), encode(newer), encode(older)],
            key=market.encode(),
        )
        published = await consume_until(kafka_bootstrap, "prediction.predictions.v1", lambda m: len(m) >= 2)

        async def history_has_both() -> list:
            rows = (await client.get(f"/v1/markets/{market}/predictions")).json()["items"]
            assert len(rows) == 2
            return rows

        await eventually(history_has_both)
        latest = (await client.get(f"/v1/markets/{market}/prediction")).json()
        # The gateway reads the same entry in place of this API (om_contracts.caches): it must hold the latest.
        redis = Redis.from_url(redis_url)
        try:
            cached = json.loads(await redis.hget(prediction_latest_key(market), PREDICTION_LATEST_FIELD) or b"null")
        finally:
            await redis.aclose()
        missing = await client.get("/v1/markets/unknown/prediction")

    assert len(published) == 2  # the redelivered vector was not predicted again
    assert latest["probability"] == 0.9
    assert latest["confidence"] == 0.9
    assert latest["model_version"] == "baseline-market-price"
    assert latest["risk_level"] == "low"
    assert missing.status_code == 404
    assert cached is not None and cached["probability"] == 0.9 and cached["event_id"] == latest["event_id"]
