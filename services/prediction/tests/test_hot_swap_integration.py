"""Model swaps on real Kafka, PostgreSQL and Redis: a promotion announced on model.lifecycle.v1 while vectors
stream in loses no vector and predicts none twice, re-scores every open market with the new model; a corrupt
artifact promoted next is refused and the previous model keeps serving; a resolution gets a final prediction."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from om_cli.history.offline_features import snapshot_rows
from om_cli.history.simulated import HistoryConfig, simulate_history
from om_cli.testing import app_client, consume_until, eventually, produce
from om_contracts import (
    FeatureVectorComputed,
    MarketCancelled,
    MarketFeatures,
    MarketResolved,
    ModelLifecycleChanged,
    derived_event_id,
    encode,
)
from om_prediction.app import create_app
from om_prediction.model import TrainParams
from om_prediction.registry import PromotionRule, Registry
from om_prediction.settings import PredictionSettings
from om_prediction.training.pipeline import train

pytestmark = pytest.mark.integration
ANY = PromotionRule(max_upper_vs_market=1.0, max_worse_than_production=1.0)  # this test is about serving


def vector(market: str, price: float, at: datetime) -> FeatureVectorComputed:
    features = MarketFeatures(
        current_price=price, total_volume=500, participant_count=12, trade_count=40, days_remaining=2
    )
    return FeatureVectorComputed(occurred_at=at, producer="t", market_id=market, features=features, source_event_id="s")


def announce(version: str) -> bytes:
    return encode(
        ModelLifecycleChanged(occurred_at=datetime.now(UTC), producer="test", model_version=version, state="production")
    )


async def test_swap_under_load_corrupt_refusal_and_final_prediction(
    kafka_bootstrap: str, database_url: str, redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = Registry(tmp_path / "models")
    rows = list(snapshot_rows(list(simulate_history(100, seed=21, history=HistoryConfig(trades_per_market=30)))))
    small = TrainParams(rf_trees=20, gbm_rounds=40)
    first = train(rows, registry, small, progress=False)
    second = train(rows, registry, TrainParams(rf_trees=20, gbm_rounds=40, seed=1), progress=False)
    settings = PredictionSettings(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        models_dir=registry.root,
        registry_poll_s=3600,  # only the lifecycle event may trigger the swap here
        live_accuracy_every_s=0.5,
    )
    markets = [f"m-{uuid.uuid4().hex[:8]}" for _ in range(20)]
    start = datetime.now(UTC) - timedelta(hours=1)
    vectors = [vector(m, 0.2 + 0.03 * (i % 20), start + timedelta(seconds=i)) for i in range(15) for m in markets]
    caplog.set_level(logging.INFO)
    async with app_client(create_app(settings)) as client:
        half = len(vectors) // 2
        for i in range(0, half, 50):
            await produce(kafka_bootstrap, "feature.vectors.v1", [encode(v) for v in vectors[i : i + 50]])

        async def every_market_predicted() -> None:  # open markets known before the swap, to be re-scored
            for m in markets:
                assert (await client.get(f"/v1/markets/{m}/prediction")).status_code == 200, m

        await eventually(every_market_predicted, timeout_s=60)
        registry.promote(first["version"], ANY)
        await produce(kafka_bootstrap, "model.lifecycle.v1", [announce(first["version"])])
        for i in range(half, len(vectors), 50):
            await produce(kafka_bootstrap, "feature.vectors.v1", [encode(v) for v in vectors[i : i + 50]])

        async def all_markets_on_first() -> None:
            for m in markets:
                latest = (await client.get(f"/v1/markets/{m}/prediction")).json()
                assert latest.get("model_version") == first["version"], latest  # none yet: a 404 body

        await eventually(all_markets_on_first, timeout_s=60)

        # every vector predicted exactly once (by whichever model served its batch), none lost
        ids = [str(derived_event_id(v.event_id, "prediction")) for v in vectors]

        async def every_vector_stored() -> list[dict]:
            # a market's latest may already be a re-scoring by the new model while its last vectors are in flight
            stored: list[dict] = []
            for m in markets:
                stored += (await client.get(f"/v1/markets/{m}/predictions", params={"limit": 1000})).json()["items"]
            assert set(ids) <= {p["event_id"] for p in stored}
            # after the swap every open market (all 20 had vectors before it) was re-scored by the new model, once
            again = Counter(p["market_id"] for p in stored if p["event_id"] not in set(ids))
            assert again == dict.fromkeys(markets, 1), again
            return stored

        stored = await eventually(every_vector_stored, timeout_s=60)
        by_id = {p["event_id"] for p in stored}
        assert len(stored) == len(by_id)  # no duplicate rows
        rescored = [p for p in stored if p["event_id"] not in set(ids)]
        assert {p["model_version"] for p in rescored} == {first["version"]}
        assert sorted(p["market_id"] for p in rescored) == sorted(markets)
        versions = {p["model_version"] for p in stored}
        assert versions <= {first["version"], "baseline-market-price"} and first["version"] in versions
        published = await consume_until(
            kafka_bootstrap, "prediction.predictions.v1", lambda m: set(ids) <= {p["event_id"] for p in m}
        )
        times = Counter(p["event_id"] for p in published)
        assert all(times[i] == 1 for i in ids)  # published once each

        # a corrupt artifact promoted next is refused; the first model keeps serving new vectors
        registry.promote(second["version"], ANY)
        artifact = registry.root / second["artifact"]
        artifact.write_bytes(artifact.read_bytes()[:-5] + b"XXXXX")
        await produce(kafka_bootstrap, "model.lifecycle.v1", [announce(second["version"])])
        await eventually(lambda: _logged(caplog, f"refusing model {second['version']}"), timeout_s=30)
        late = vector(markets[0], 0.55, start + timedelta(minutes=30))
        await produce(kafka_bootstrap, "feature.vectors.v1", [encode(late)])

        async def late_scored_by_first() -> None:
            latest = (await client.get(f"/v1/markets/{markets[0]}/prediction")).json()
            assert latest["features_as_of"].startswith(late.occurred_at.isoformat()[:19])
            assert latest["model_version"] == first["version"]

        await eventually(late_scored_by_first, timeout_s=30)

        # a resolution: one final prediction, and live accuracy for the serving version
        resolved = MarketResolved(
            occurred_at=datetime.now(UTC), producer="t", market_id=markets[1], resolution="YES", resolution_price=1.0
        )
        await produce(kafka_bootstrap, "market.lifecycle.v1", [encode(resolved)], key=markets[1].encode())
        cancelled = MarketCancelled(occurred_at=datetime.now(UTC), producer="t", market_id=markets[3], reason="void")
        await produce(kafka_bootstrap, "market.lifecycle.v1", [encode(cancelled)], key=markets[3].encode())

        async def final_made() -> None:
            for m in (markets[1], markets[3]):  # resolved, cancelled: one final prediction each
                items = (await client.get(f"/v1/markets/{m}/predictions")).json()["items"]
                finals = [p for p in items if p["final"]]
                assert len(finals) == 1 and finals[0]["model_version"] == first["version"], m
            models = (await client.get("/v1/models")).json()
            live = next(v for v in models["items"] if v["version"] == first["version"])["live"]
            assert live and live["markets"] == 1

        await eventually(final_made, timeout_s=30)
        batch = (await client.post("/v1/predictions/batch", json={"market_ids": [markets[2], "nope"]})).json()
        assert markets[2] in batch["predictions"] and batch["errors"]["nope"]["status"] == 404

        # metrics by model version, and live accuracy recorded in the registry (which `om models` reads)
        async def live_recorded() -> str:
            assert (registry.get(first["version"]).get("live") or {}).get("markets") == 1
            return (await client.get("/metrics")).text

        metrics = await eventually(live_recorded, timeout_s=30)
        by_version = _samples(metrics, "prediction_predictions_total")
        assert by_version[(first["version"], "false")] >= len(rescored)
        assert by_version[(first["version"], "true")] == 2  # the final predictions of the resolved and cancelled ones
        # Every stored prediction is counted (+ the late one and the two finals). A counter counts work done, so a batch
        # the broker redelivers (a rebalance under load) is counted again though its rows dedupe: at least, not equal.
        assert sum(by_version.values()) >= len(stored) + 3
        assert f'prediction_live_markets{{model_version="{first["version"]}"}} 1.0' in metrics
        assert f'prediction_live_brier{{model_version="{first["version"]}"}}' in metrics


def _samples(metrics: str, name: str) -> dict[tuple[str, str], float]:
    """(model_version, final) -> value of a Prometheus counter in the text format."""
    out = {}
    for line in metrics.splitlines():
        if line.startswith(name + "{"):
            labels = dict(kv.split("=", 1) for kv in line[line.index("{") + 1 : line.index("}")].split(","))
            out[(labels["model_version"].strip('"'), labels["final"].strip('"'))] = float(line.rsplit(" ", 1)[1])
    return out


async def _logged(caplog: pytest.LogCaptureFixture, text: str) -> None:
    await asyncio.sleep(0)
    assert text in caplog.text
