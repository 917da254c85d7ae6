"""The training export against real PostgreSQL: snapshots of resolved (never cancelled) markets, each strictly
before close and resolution, in (resolved_at, market_id, as_of) order, paged by an opaque cursor; bad queries 422."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI

from om_contracts import MarketCancelled, MarketClosed, MarketCreated, MarketFeatures, MarketResolved, TradeExecuted
from om_feature import api, store
from om_feature.app import MIGRATIONS
from om_feature.engine import Engine, EngineConfig
from om_runtime.cache import create_redis
from om_runtime.db import Database

pytestmark = pytest.mark.integration
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def created(market: str, category: str = "sports") -> MarketCreated:
    return MarketCreated(
        occurred_at=T0,
        producer="t",
        market_id=market,
        question="q?",
        category=category,
        close_at=T0 + timedelta(hours=10),
    )


def trade(market: str, hours: float, price: float) -> TradeExecuted:
    return TradeExecuted(
        occurred_at=T0 + timedelta(hours=hours),
        producer="t",
        trade_id=f"{market}-{hours}",
        market_id=market,
        user_id=f"u{hours}",
        outcome="YES",
        amount=10.0,
        shares=20.0,
        price_before=0.5,
        price_after=price,
    )


def stream() -> list:
    events: list = []
    for market in ("a", "b", "c"):
        events.append(created(market))
        events += [trade(market, h, 0.5 + h / 20) for h in (1, 2, 3)]
    events += [
        MarketClosed(occurred_at=T0 + timedelta(hours=4), producer="t", market_id="a"),
        MarketResolved(
            occurred_at=T0 + timedelta(hours=5), producer="t", market_id="a", resolution="YES", resolution_price=1.0
        ),
        MarketCancelled(occurred_at=T0 + timedelta(hours=5), producer="t", market_id="b"),
        MarketResolved(
            occurred_at=T0 + timedelta(hours=3, minutes=30),
            producer="t",
            market_id="c",
            resolution="NO",
            resolution_price=0.0,
        ),
        trade("c", 3.75, 0.1),  # after resolution: no vector, no snapshot
    ]
    return events


async def test_training_export_pages_point_in_time_snapshots_of_resolved_markets(
    database_url: str, redis_url: str
) -> None:
    engine = Engine(EngineConfig(snapshot_every_s=3600))
    out = engine.process((e, 0, None) for e in stream())
    db = Database(database_url, schema="feature", migrations=MIGRATIONS)
    redis = create_redis(redis_url)
    app = FastAPI()
    app.include_router(api.router(redis, db))
    async with db, redis:
        async with db.transaction() as conn:
            await store.save_checkpoint(
                conn, engine.take_dirty(), {("market.trades.v1", 0): 17}, out.snapshots, out.outcomes
            )
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            everything = (await client.get("/v1/training/snapshots", params={"limit": 5000})).json()
            pages, cursor = [], None
            while True:
                params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
                page = (await client.get("/v1/training/snapshots", params=params)).json()
                pages += page["items"]
                if not (cursor := page["next_cursor"]):
                    break
            only_a = (
                await client.get(
                    "/v1/training/snapshots",
                    params={"resolved_after": (T0 + timedelta(hours=4)).isoformat()},
                )
            ).json()
            bad_cursor = await client.get("/v1/training/snapshots", params={"cursor": "nope"})
            bad_limit = await client.get("/v1/training/snapshots", params={"limit": 5001})
            naive = await client.get("/v1/training/snapshots", params={"resolved_after": "2026-01-01T00:00:00"})

    items = everything["items"]
    assert everything["next_cursor"] is None
    assert pages == items  # paging by 2 returns exactly the same rows
    assert {i["market_id"] for i in items} == {"a", "c"}  # b was cancelled
    # c resolved first (3.5 h), then a (5 h); within a market by as_of
    keys = [(i["resolved_at"], i["market_id"], i["as_of"]) for i in items]
    assert keys == sorted(keys) and items[0]["market_id"] == "c"
    for item in items:
        as_of = datetime.fromisoformat(item["as_of"])
        assert as_of < datetime.fromisoformat(item["resolved_at"])
        assert as_of < datetime.fromisoformat(item["close_at"])
        MarketFeatures.model_validate(item["features"])  # the contract's shape, current_price included
    a = [i for i in items if i["market_id"] == "a"]
    # hourly cadence: creation (0 h), 1 h, 2 h, 3 h trades, and the last state before close (3 h again, same id)
    assert [datetime.fromisoformat(i["as_of"]) - T0 for i in a] == [timedelta(hours=h) for h in (0, 1, 2, 3)]
    assert a[-1]["features"]["trade_count"] == 3 and a[-1]["features"]["current_price"] == pytest.approx(0.65)
    assert (a[0]["resolution"], a[0]["resolution_price"]) == ("YES", 1.0)
    c = [i for i in items if i["market_id"] == "c"]
    assert max(datetime.fromisoformat(i["as_of"]) for i in c) == T0 + timedelta(hours=3)
    assert c[0]["resolution"] == "NO"
    assert {i["market_id"] for i in only_a["items"]} == {"a"}
    for reply in (bad_cursor, bad_limit, naive):
        assert reply.status_code == 422, reply.text
        assert reply.json()["detail"]
