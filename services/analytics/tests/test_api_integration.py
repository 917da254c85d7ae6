"""analytics' internal API against real Kafka, PostgreSQL and Redis, with hand-computed numbers: market and user
metrics, listings with cursors, candles, price history, leaderboard, calibration, both insights, health, 404s
and 422s; and two replicas of which exactly one leads."""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from om_analytics.app import create_app
from om_analytics.leader import Leadership
from om_analytics.settings import AnalyticsSettings
from om_cli.testing import app_client, cache_reads, consume_until, eventually, produce
from om_contracts import MarketCreated, MarketResolved, PredictionMade, SignalObserved, TradeExecuted, encode

pytestmark = pytest.mark.integration

BASE = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)


def settings(kafka: str, database: str, redis: str, prefix: str) -> AnalyticsSettings:
    return AnalyticsSettings(
        KAFKA_BOOTSTRAP_SERVERS=kafka, DATABASE_URL=database, REDIS_URL=redis, redis_prefix=prefix,
        system_interval_s=0.1, system_heartbeat_s=0.5, health_interval_s=0.5, idle_advance_s=0,
        service_urls={"ingest": "http://127.0.0.1:9"}, consumer_groups=["analytics"],
    )  # fmt: skip


def trade(tid: str, market: str, user: str, side: str, outcome: str, amount: float, shares: float,
          before: float, after: float, minutes: int) -> TradeExecuted:  # fmt: skip
    return TradeExecuted(
        occurred_at=BASE + timedelta(minutes=minutes), producer="t", trade_id=tid, market_id=market, user_id=user,
        side=side, outcome=outcome, amount=amount, shares=shares, price_before=before, price_after=after,
    )  # fmt: skip


def prediction(market: str, p: float) -> PredictionMade:
    return PredictionMade(
        occurred_at=BASE, producer="t", market_id=market, probability=p, confidence=max(p, 1 - p),
        risk_level="low", model_version="v1", features_as_of=BASE + timedelta(minutes=30),
    )  # fmt: skip


async def test_internal_api_serves_every_view(kafka_bootstrap: str, database_url: str, redis_url: str) -> None:
    tag = uuid.uuid4().hex[:6]
    a, b, c = f"a{tag}", f"b{tag}", f"c{tag}"
    alice, bob = f"alice{tag}", f"bob{tag}"
    created = [
        MarketCreated(
            occurred_at=BASE - timedelta(days=1),
            producer="t",
            market_id=m,
            question="q?",
            category=cat,
            close_at=BASE + timedelta(days=days),
            initial_price=0.5,
        )  # fmt: skip
        for m, cat, days in ((a, f"cat{tag}", 2), (b, f"cat{tag}", 3), (c, f"other{tag}", 2))
    ]
    trades = [
        trade(f"{tag}1", a, alice, "BUY", "YES", 4.0, 10.0, 0.5, 0.6, minutes=0),
        trade(f"{tag}2", a, bob, "BUY", "NO", 6.0, 10.0, 0.6, 0.4, minutes=1),
        trade(f"{tag}3", a, alice, "SELL", "YES", 2.0, 4.0, 0.4, 0.5, minutes=61),
        trade(f"{tag}4", b, bob, "BUY", "YES", 20.0, 25.0, 0.5, 0.8, minutes=2),
    ]
    signal = SignalObserved(occurred_at=BASE + timedelta(minutes=5), producer="t", signal_id="s", market_id=a,
                            kind="news", source="wire", text="news", sentiment=0.4)  # fmt: skip
    resolved = MarketResolved(occurred_at=BASE + timedelta(minutes=90), producer="t", market_id=b,
                              resolution="YES", resolution_price=1.0)  # fmt: skip
    app = create_app(settings(kafka_bootstrap, database_url, redis_url, f"t{tag}"))
    async with app_client(app) as client:
        await produce(kafka_bootstrap, "market.lifecycle.v1", [encode(e) for e in created])

        async def markets_known() -> None:
            for m in (a, b, c):
                assert (await client.get(f"/v1/markets/{m}/metrics")).status_code == 200

        await eventually(markets_known)
        await produce(kafka_bootstrap, "market.trades.v1", [encode(t) for t in trades])
        await produce(kafka_bootstrap, "market.signals.v1", [encode(signal)])
        await produce(kafka_bootstrap, "prediction.predictions.v1", [encode(prediction(a, 0.3)),
                                                                     encode(prediction(b, 0.7))])  # fmt: skip

        async def trades_applied() -> dict:
            reply = (await client.get(f"/v1/markets/{a}/metrics")).json()
            assert reply["trade_count"] == 3 and reply["news_mentions_24h"] == 1
            assert reply["predicted_probability"] == 0.3
            return reply

        await eventually(trades_applied)
        await produce(kafka_bootstrap, "market.lifecycle.v1", [encode(resolved)])
        # At resolution prediction emits B's final prediction; it outranks an ordinary one from newer features
        # (here arriving just before it), so calibration scores the final one. (Either order: test_metrics.)
        final = prediction(b, 0.75).model_copy(update={"final": True, "event_id": uuid.uuid4()})
        newer = prediction(b, 0.2).model_copy(
            update={"features_as_of": BASE + timedelta(minutes=40), "event_id": uuid.uuid4()}
        )
        await produce(kafka_bootstrap, "prediction.predictions.v1", [encode(newer), encode(final)])

        async def resolved_and_current() -> dict:
            reply = (await client.get(f"/v1/markets/{a}/metrics")).json()
            assert reply["as_of"] == (BASE + timedelta(minutes=90)).isoformat()
            b_now = (await client.get(f"/v1/markets/{b}/metrics")).json()
            assert b_now["status"] == "resolved" and b_now["predicted_probability"] == 0.75
            return reply

        m = await eventually(resolved_and_current)
        assert (m["current_price"], m["volume_24h"], m["total_volume"], m["trades_24h"]) == (0.5, 12.0, 12.0, 3)
        assert (m["participant_count"], m["active_traders_24h"], m["price_change_24h"]) == (2, 2, 0.0)
        assert m["sentiment_24h"] == 0.4 and m["liquidity"] == 0.3  # 12 / (100 * (0.1 + 0.2 + 0.1))
        assert m["prediction_accuracy"] == {"resolved_markets": 1, "accuracy": 1.0, "brier": 0.0625}  # (0.75 - 1)²
        reads = cache_reads((await client.get("/metrics")).text, "analytics-market")
        assert (await client.get(f"/v1/markets/{a}/metrics")).status_code == 200
        assert (await client.get("/v1/markets/nope/metrics")).status_code == 404
        hits, misses = cache_reads((await client.get("/metrics")).text, "analytics-market")
        assert (hits - reads[0], misses - reads[1]) == (1, 1)  # what platform health's cache hit rate is made of

        # Listing: category filter, sort by close time, cursor paging, validation.
        page = (await client.get("/v1/markets", params={"category": f"cat{tag}", "sort": "close_at",
                                                         "order": "asc", "limit": 1})).json()  # fmt: skip
        assert [i["market_id"] for i in page["items"]] == [a] and page["next_cursor"]
        page2 = (await client.get("/v1/markets", params={"category": f"cat{tag}", "sort": "close_at",
                                                          "order": "asc", "limit": 1,
                                                          "cursor": page["next_cursor"]})).json()  # fmt: skip
        assert [i["market_id"] for i in page2["items"]] == [b] and page2["next_cursor"] is None
        assert (await client.get("/v1/markets", params={"status": "resolved", "category": f"cat{tag}"})).json()[
            "items"
        ][0]["market_id"] == b
        for bad in ({"sort": "price"}, {"cursor": "!!"}, {"limit": 0}, {"status": "gone"}):
            assert (await client.get("/v1/markets", params=bad)).status_code == 422, bad

        # Candles: two trades in the first hour, one in the second.
        candles = (await client.get(f"/v1/markets/{a}/candles", params={"timeframe": "24h"})).json()
        assert candles["resolution"] == "1h"
        assert [(k["open"], k["high"], k["low"], k["close"], k["volume"], k["trades"]) for k in candles["candles"]] == [
            (0.6, 0.6, 0.4, 0.4, 10.0, 2),
            (0.5, 0.5, 0.5, 0.5, 2.0, 1),
        ]
        minute = (await client.get(f"/v1/markets/{a}/candles", params={"timeframe": "1h", "resolution": "1m"})).json()
        assert [k["close"] for k in minute["candles"]] == [0.5]  # only the last trade is within the last hour
        later, earlier = (BASE + timedelta(hours=1)).isoformat(), BASE.isoformat()
        bad = await client.get(f"/v1/markets/{a}/candles", params={"from": later, "to": earlier})
        assert bad.status_code == 422
        too_many = await client.get(f"/v1/markets/{a}/candles", params={"timeframe": "30d", "resolution": "1m"})
        assert too_many.status_code == 422
        assert (await client.get(f"/v1/markets/{a}/candles", params={"timeframe": "1y"})).status_code == 422
        assert (await client.get("/v1/markets/nope/candles")).status_code == 404
        history = (await client.get(f"/v1/markets/{a}/price-history")).json()
        assert [p["price"] for p in history["points"]] == [0.6, 0.4, 0.5]

        # Users: alice holds 6 YES of A bought at 0.4; bob won on B and holds 10 NO of A bought at 0.6.
        alice_m = (await client.get(f"/v1/users/{alice}/metrics")).json()
        assert (alice_m["total_trades"], alice_m["total_volume"], alice_m["success_rate"]) == (2, 6.0, None)
        assert (alice_m["realized_pnl"], alice_m["unrealized_pnl"], alice_m["exposure"]) == (0.4, 0.6, 2.4)
        assert alice_m["preferred_categories"] == [f"cat{tag}"]
        bob_m = (await client.get(f"/v1/users/{bob}/metrics")).json()
        assert (bob_m["realized_pnl"], bob_m["unrealized_pnl"], bob_m["total_pnl"]) == (5.0, -1.0, 4.0)
        assert (bob_m["resolved_positions"], bob_m["winning_positions"], bob_m["success_rate"]) == (1, 1, 1.0)
        assert (await client.get("/v1/users/nobody/metrics")).status_code == 404
        portfolio = (await client.get(f"/v1/users/{bob}/portfolio")).json()
        assert [(p["market_id"], p["outcome"], p["shares"]) for p in portfolio["positions"]] == [(a, "NO", 10.0)]
        assert (await client.get("/v1/users/nobody/portfolio")).status_code == 404

        async def leaderboard_current() -> None:  # from user snapshots, recomputed every second
            board = (await client.get("/v1/leaderboard", params={"by": "volume", "limit": 100})).json()["items"]
            mine = [(i["user_id"], i["value"]) for i in board if i["user_id"] in (alice, bob)]
            assert mine == [(bob, 26.0), (alice, 6.0)]

        await eventually(leaderboard_current)
        assert (await client.get("/v1/leaderboard", params={"by": "luck"})).status_code == 422

        cal = (await client.get("/v1/calibration", params={"category": f"cat{tag}"})).json()
        assert cal["resolved_markets"] == 1
        assert cal["prices"]["brier"] == pytest.approx(0.04) and cal["predictions"]["brier"] == pytest.approx(0.0625)
        assert cal["prices"]["reliability"] == [
            {"lower": 0.8, "upper": 0.9, "count": 1, "mean_forecast": 0.8, "observed_rate": 1.0}
        ]

        insight = (await client.get(f"/v1/insights/market/{a}")).json()
        assert insight["prediction"]["probability"] == 0.3
        assert [x["market_id"] for x in insight["comparable_markets"]] == [b]
        assert len(insight["trend"]["candles"]) == 2
        assert (await client.get("/v1/insights/market/nope")).status_code == 404
        mine = (await client.get(f"/v1/insights/portfolio/{alice}")).json()
        assert [(d["market_id"], d["outcome"]) for d in mine["disagreements"]] == [(a, "YES")]
        assert (await client.get("/v1/insights/portfolio/nobody")).status_code == 404

        health = (await client.get("/v1/system/health")).json()
        [ingest] = health["services"]
        assert (ingest["service"], ingest["up"]) == ("ingest", False) and ingest["error"]
        assert (ingest["processing_p50_s"], ingest["cache_hit_rate"], ingest["db_pool_in_use"]) == (None,) * 3

        users = await consume_until(
            kafka_bootstrap, "analytics.user.v1", lambda us: any(u["user_id"] == bob for u in us)
        )
        assert any(u["user_id"] == bob and u["success_rate"] == 1.0 for u in users)
        await consume_until(kafka_bootstrap, "analytics.health.v1", lambda hs: len(hs) > 0)


async def test_exactly_one_replica_leads_and_another_takes_over(database_url: str) -> None:
    first, second = Leadership(database_url), Leadership(database_url)
    try:
        assert await first.try_acquire()
        assert not await second.try_acquire()
        assert await first.try_acquire()  # still the leader
        await first.release()  # the leader's process ends
        assert await second.try_acquire()
        assert not await first.try_acquire()
    finally:
        for leadership in (first, second):
            with contextlib.suppress(Exception):
                await leadership.release()


async def test_two_replicas_elect_one_leader(kafka_bootstrap: str, database_url: str, redis_url: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:6]}"
    one = create_app(settings(kafka_bootstrap, database_url, redis_url, prefix))
    two = create_app(settings(kafka_bootstrap, database_url, redis_url, prefix))
    async with app_client(one), app_client(two):

        async def one_leader() -> None:
            leaders = [app.state.analytics.leadership.is_leader for app in (one, two)]
            assert leaders.count(True) == 1, leaders

        await eventually(one_leader)


async def test_what_the_first_request_would_wait_for_is_done_before_serving(
    kafka_bootstrap: str, database_url: str, redis_url: str
) -> None:
    """Started (before any request): the runtime built the OpenAPI document and every included router's routes,
    which FastAPI builds lazily (all of them on the first request OpenTelemetry names)."""
    from fastapi.routing import _IncludedRouter  # (where FastAPI keeps an included router's routes, built lazily)

    app = create_app(settings(kafka_bootstrap, database_url, redis_url, f"t{uuid.uuid4().hex[:6]}"))
    included = [r for r in app.router.routes if isinstance(r, _IncludedRouter)]
    assert len(included) == 2  # the runtime's probes and metrics, and analytics' API
    assert app.openapi_schema is None and all(r._effective_candidates_version is None for r in included)
    async with app_client(app):
        assert app.openapi_schema is not None
        assert "/v1/markets/{market_id}/metrics" in app.openapi_schema["paths"]
        assert all(r._effective_candidates_version is not None for r in included)
