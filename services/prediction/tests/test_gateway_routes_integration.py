"""prediction's public routes through the real gateway to the real prediction service (PostgreSQL, Redis, Kafka):
`POST /api/v1/ai-analytics/predictions/batch` (up to 1,000 ids, partial results with per-id errors) and
`GET /api/v1/ai-analytics/predictions/{id}/history` by time range and cursor (issue item 7)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from om_cli.testing import app_client, eventually, produce
from om_contracts import FeatureVectorComputed, MarketFeatures, encode
from om_gateway.testing import ADMIN_KEY, bearer, gateway_settings, running_gateway
from om_prediction.app import create_app
from om_prediction.settings import PredictionSettings

pytestmark = pytest.mark.integration
ADMIN = bearer(ADMIN_KEY)


def vector(market: str, price: float, at: datetime) -> FeatureVectorComputed:
    features = MarketFeatures(current_price=price, total_volume=300, participant_count=8, trade_count=12)
    return FeatureVectorComputed(occurred_at=at, producer="t", market_id=market, features=features, source_event_id="s")


async def test_batch_and_history_through_the_gateway(infra_env: dict[str, str], tmp_path: Path) -> None:
    settings = PredictionSettings(
        KAFKA_BOOTSTRAP_SERVERS=infra_env["KAFKA_BOOTSTRAP_SERVERS"],
        DATABASE_URL=infra_env["DATABASE_URL"],
        REDIS_URL=infra_env["REDIS_URL"],
        models_dir=tmp_path / "models",
    )
    markets = [f"gw-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    vectors = [vector(m, 0.2 + 0.1 * i, t0 + timedelta(minutes=i)) for m in markets for i in range(5)]
    prediction = create_app(settings)
    async with app_client(prediction) as direct:
        await produce(infra_env["KAFKA_BOOTSTRAP_SERVERS"], "feature.vectors.v1", [encode(v) for v in vectors])

        async def all_predicted() -> None:
            for m in markets:
                items = (await direct.get(f"/v1/markets/{m}/predictions")).json()["items"]
                assert len(items) == 5, m

        await eventually(all_predicted, timeout_s=30)
        async with running_gateway(gateway_settings(infra_env, tmp_path), prediction=prediction) as (_, client):
            api = "/api/v1/ai-analytics/predictions"
            ids = [markets[0], "gw-unknown", markets[1], markets[0], markets[2]]
            batch = await client.post(f"{api}/batch", json={"market_ids": ids}, headers=ADMIN)
            too_many = await client.post(
                f"{api}/batch", json={"market_ids": [f"m{i}" for i in range(1001)]}, headers=ADMIN
            )
            empty = await client.post(f"{api}/batch", json={"market_ids": []}, headers=ADMIN)
            thousand = await client.post(
                f"{api}/batch", json={"market_ids": [*markets, *(f"gw-none-{i}" for i in range(997))]}, headers=ADMIN
            )
            bounds = {"from": (t0 + timedelta(minutes=1)).isoformat(), "to": (t0 + timedelta(minutes=4)).isoformat()}
            first = await client.get(f"{api}/{markets[1]}/history", params={**bounds, "limit": 2}, headers=ADMIN)
            rest = await client.get(
                f"{api}/{markets[1]}/history",
                params={**bounds, "limit": 2, "cursor": first.json()["next_cursor"]},
                headers=ADMIN,
            )
            anonymous = await client.post(f"{api}/batch", json={"market_ids": markets})

    assert batch.status_code == 200, batch.text
    body = batch.json()
    assert set(body["predictions"]) == set(markets)  # duplicates asked once
    assert body["predictions"][markets[1]]["probability"] == pytest.approx(0.6)  # the latest vector's price
    assert body["errors"] == {"gw-unknown": {"status": 404, "detail": "no prediction for market 'gw-unknown' yet"}}
    assert thousand.status_code == 200 and len(thousand.json()["errors"]) == 997
    assert len(thousand.json()["predictions"]) == 3
    assert too_many.status_code == 422 and empty.status_code == 422
    assert first.status_code == 200 and rest.status_code == 200
    prices = [p["probability"] for p in first.json()["items"] + rest.json()["items"]]
    assert prices == pytest.approx([0.5, 0.4, 0.3])  # minutes 3, 2, 1: newest first, `to` exclusive
    assert rest.json()["next_cursor"] is None
    assert anonymous.status_code == 401
