"""analytics against real Kafka and PostgreSQL: metrics follow the events, a redelivered event is counted once,
and the system snapshot is published with the product's fields."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from om_analytics.app import create_app
from om_analytics.settings import AnalyticsSettings
from om_cli.testing import app_client, consume_until, eventually, produce
from om_contracts import MarketCreated, MarketResolved, PredictionMade, TradeExecuted, encode

pytestmark = pytest.mark.integration


async def test_metrics_follow_events_and_redeliveries_change_nothing(
    kafka_bootstrap: str, database_url: str, redis_url: str
) -> None:
    settings = AnalyticsSettings(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        redis_prefix=f"t{uuid.uuid4().hex[:8]}",
        system_interval_s=0.1,
        service_urls={},
    )
    now = datetime.now(UTC)
    market = f"m-{uuid.uuid4().hex[:8]}"
    created = MarketCreated(
        occurred_at=now - timedelta(hours=30),
        producer="t",
        market_id=market,
        question="q?",
        category="c",
        close_at=now + timedelta(days=1),
        initial_price=0.5,
    )

    def trade(user: str, amount: float, price: float, hours_ago: float) -> TradeExecuted:
        return TradeExecuted(
            occurred_at=now - timedelta(hours=hours_ago),
            producer="t",
            trade_id=uuid.uuid4().hex[:10],
            market_id=market,
            user_id=user,
            outcome="YES",
            amount=amount,
            shares=amount * 2,
            price_before=0.5,
            price_after=price,
        )

    old, recent = trade("alice", 40.0, 0.4, hours_ago=26), trade("bob", 10.0, 0.6, hours_ago=1)
    prediction = PredictionMade(
        occurred_at=now,
        producer="t",
        market_id=market,
        probability=0.6,
        confidence=0.6,
        risk_level="high",
        model_version="baseline-market-price",
        features_as_of=now,
    )
    async with app_client(create_app(settings)) as client:
        await produce(kafka_bootstrap, "market.lifecycle.v1", [encode(created)], key=market.encode())
        await produce(
            kafka_bootstrap,
            "market.trades.v1",
            [encode(old), encode(recent), encode(recent)],
            key=market.encode(),
        )
        await produce(kafka_bootstrap, "prediction.predictions.v1", [encode(prediction)], key=market.encode())

        async def metrics_include_prediction() -> dict:
            reply = await client.get(f"/v1/markets/{market}/metrics")
            assert reply.status_code == 200 and reply.json()["predicted_probability"] == 0.6
            return reply.json()

        metrics = await eventually(metrics_include_prediction)
        assert metrics["trade_count"] == 2 and metrics["total_volume"] == 50.0  # the redelivery counted once
        assert metrics["volume_24h"] == 10.0
        assert metrics["participant_count"] == 2
        assert metrics["current_price"] == 0.6
        assert metrics["price_change_24h"] == 50.0  # from 0.4, the last price before the window, to 0.6
        assert metrics["model_version"] == "baseline-market-price"

        system = (await client.get("/v1/system/metrics")).json()
        assert system["system_metrics"] == {
            "total_users": 2,
            "active_users": 1,
            "total_markets": 1,
            "active_markets": 1,
            "total_volume_24h": 10.0,
            "total_trades_24h": 1,
        }
        assert system["top_markets"] == [
            {"market_id": market, "current_price": 0.6, "volume_24h": 10.0, "price_change_24h": 50.0}
        ]

        # Where the analytics hop of trade -> WebSocket goes: the market rounds that published these updates
        # (and the user rounds) are on /metrics.
        exposed = (await client.get("/metrics")).text
        assert 'analytics_snapshot_round_seconds_count{kind="markets"}' in exposed
        published = [line for line in exposed.splitlines() if line.startswith(
            "analytics_commit_to_market_published_seconds_count")]  # fmt: skip
        assert published and float(published[0].split()[-1]) >= 1

        resolved = MarketResolved(
            occurred_at=now, producer="t", market_id=market, resolution="YES", resolution_price=1.0
        )
        await produce(kafka_bootstrap, "market.lifecycle.v1", [encode(resolved)], key=market.encode())
        updates = await consume_until(
            kafka_bootstrap, "analytics.market.v1", lambda m: any(u["status"] == "resolved" for u in m)
        )
        snapshots = await consume_until(
            kafka_bootstrap,
            "analytics.system.v1",
            # The latest snapshot knows the market and that it no longer trades (the first ones, from before
            # any event, have no market at all).
            lambda m: (
                bool(m)
                and (m[-1]["system_metrics"]["total_markets"], m[-1]["system_metrics"]["active_markets"]) == (1, 0)
            ),
        )
    # At most one market update per distinct event (created, two trades, prediction, resolution): a batch
    # publishes each market once, and the redelivered trade adds none.
    assert len(updates) <= 5
    assert (updates[-1]["status"], updates[-1]["trade_count"], updates[-1]["total_volume"]) == ("resolved", 2, 50.0)
    assert snapshots[-1]["system_metrics"]["active_markets"] == 0
