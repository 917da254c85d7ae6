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


async def test_a_vector_with_nan_or_infinite_values_still_gets_a_prediction(
    kafka_bootstrap: str, database_url: str, redis_url: str, tmp_path: Path
) -> None:
    """The contract and its JSON decoder accept NaN and Infinity in the unbounded features (a producer other than
    pydantic may write them): a missing value, imputed when scored. PostgreSQL's jsonb refuses them, so storing
    the latest vector as it came failed the whole batch; the vector and its batch neighbour must be predicted."""
    settings = PredictionSettings(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, DATABASE_URL=database_url, REDIS_URL=redis_url, models_dir=tmp_path
    )
    odd, plain = f"m-{uuid.uuid4().hex[:8]}", f"m-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    raw = encode(vector(odd, 0.4, now)).replace(b'"volume_trend":null', b'"volume_trend":NaN')
    raw = raw.replace(b'"momentum_indicator":null', b'"momentum_indicator":Infinity')
    assert b"NaN" in raw and b"Infinity" in raw
    async with app_client(create_app(settings)) as client:
        await produce(kafka_bootstrap, "feature.vectors.v1", [raw, encode(vector(plain, 0.6, now))], key=b"k")

        async def both_predicted() -> None:
            for market in (odd, plain):
                assert (await client.get(f"/v1/markets/{market}/prediction")).status_code == 200, market

        await eventually(both_predicted, timeout_s=30)
        latest = (await client.get(f"/v1/markets/{odd}/prediction")).json()
    assert latest["probability"] == 0.4


async def test_history_pages_by_time_range_and_cursor(
    kafka_bootstrap: str, database_url: str, redis_url: str, tmp_path: Path
) -> None:
    """`from` (inclusive) and `to` (exclusive) bound the history by features_as_of, newest first; following
    `next_cursor` returns every row once, in the same order as one big page."""
    settings = PredictionSettings(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, DATABASE_URL=database_url, REDIS_URL=redis_url, models_dir=tmp_path
    )
    market = f"m-{uuid.uuid4().hex[:8]}"
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    vectors = [vector(market, 0.1 + 0.1 * i, t0 + timedelta(minutes=i)) for i in range(7)]
    async with app_client(create_app(settings)) as client:
        await produce(kafka_bootstrap, "feature.vectors.v1", [encode(v) for v in vectors], key=market.encode())
        url = f"/v1/markets/{market}/predictions"

        async def all_stored() -> list[dict]:
            items = (await client.get(url, params={"limit": 1000})).json()["items"]
            assert len(items) == len(vectors)
            return items

        everything = await eventually(all_stored, timeout_s=30)
        pages, cursor = [], None
        while True:
            body = (await client.get(url, params={"limit": 3} | ({"cursor": cursor} if cursor else {}))).json()
            pages.append(body["items"])
            if not (cursor := body["next_cursor"]):
                break
        bounds = {"from": (t0 + timedelta(minutes=2)).isoformat(), "to": (t0 + timedelta(minutes=5)).isoformat()}
        window = (await client.get(url, params=bounds)).json()
        bad_cursor = await client.get(url, params={"cursor": "not-a-cursor"})
        bad_limit = await client.get(url, params={"limit": 1001})

    assert [len(p) for p in pages] == [3, 3, 1]
    assert [p["event_id"] for page in pages for p in page] == [p["event_id"] for p in everything]
    times = [datetime.fromisoformat(p["features_as_of"]) for p in everything]
    assert times == sorted(times, reverse=True)
    assert [datetime.fromisoformat(p["features_as_of"]) - t0 for p in window["items"]] == [
        timedelta(minutes=m) for m in (4, 3, 2)
    ]
    assert window["next_cursor"] is None
    assert bad_cursor.status_code == 422 and bad_limit.status_code == 422
