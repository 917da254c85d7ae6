"""Event times, finite numbers and `amount_estimated` through ingest's HTTP API, on real PostgreSQL and Kafka:
every write takes `occurred_at` (and it reaches the event), times too far ahead are a 422, a JSON body that
spells NaN or Infinity is a 422 naming the field (never a 500), and nothing refused is published."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from om_cli.testing import app_client, consume_until
from om_ingest.app import create_app
from om_ingest.settings import IngestSettings

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)


@pytest.fixture
def settings(kafka_bootstrap: str, database_url: str) -> IngestSettings:
    return IngestSettings(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, DATABASE_URL=database_url, max_future_skew_s=60)


def market(mid: str, **fields: object) -> dict:
    return {"market_id": mid, "question": "Q?", "close_at": (NOW + timedelta(days=30)).isoformat(), **fields}


def trade(mid: str, **fields: object) -> dict:
    return {"market_id": mid, "user_id": "u1", "outcome": "YES", "amount": 5.0, "shares": 10.0, "price": 0.5, **fields}


def locs(reply) -> list[list[str]]:  # noqa: ANN001
    return [e["loc"] for e in reply.json()["detail"]]


async def test_non_finite_numbers_spelt_in_json_are_a_422_naming_the_field(settings: IngestSettings) -> None:
    async with app_client(create_app(settings)) as client:
        assert (await client.post("/v1/markets", json=market("m-nan"))).status_code == 201
        for spelling in ("NaN", "Infinity", "-Infinity"):
            body = (
                '{"market_id": "m-nan", "user_id": "u1", "outcome": "YES", '
                f'"amount": {spelling}, "shares": 1, "price": 0.5}}'
            )
            reply = await client.post("/v1/trades", content=body, headers={"content-type": "application/json"})
            assert reply.status_code == 422, reply.text
            assert ["body", "amount"] in locs(reply)
        too_big = await client.post("/v1/trades", json=trade("m-nan", shares=1e12))
        assert too_big.status_code == 422 and ["body", "shares"] in locs(too_big)
        assert (await client.get("/v1/markets/m-nan/trades")).json() == []


async def test_event_times_too_far_ahead_are_refused(settings: IngestSettings) -> None:
    ahead = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    slightly = (datetime.now(UTC) + timedelta(seconds=30)).isoformat()
    async with app_client(create_app(settings)) as client:
        refused = await client.post("/v1/markets", json=market("m-future", occurred_at=ahead))
        assert refused.status_code == 422 and locs(refused) == [["body", "occurred_at"]]
        assert (await client.post("/v1/markets", json=market("m-ok", created_at=slightly))).status_code == 201
        by_old_name = await client.post("/v1/trades", json=trade("m-ok", executed_at=ahead))
        assert by_old_name.status_code == 422 and locs(by_old_name) == [["body", "executed_at"]]
        in_batch = await client.post(
            "/v1/trades/batch", json={"trades": [trade("m-ok", occurred_at=slightly), trade("m-ok", occurred_at=ahead)]}
        )
        assert in_batch.status_code == 422 and locs(in_batch) == [["body", "trades", "1", "occurred_at"]]
        signal = {"market_id": "m-ok", "kind": "news", "source": "wire", "text": "x", "occurred_at": ahead}
        assert (await client.post("/v1/signals", json=signal)).status_code == 422
        assert (await client.post("/v1/markets/m-ok/close", json={"occurred_at": ahead})).status_code == 422
        assert (await client.get("/v1/markets/m-ok")).json()["status"] == "open"


async def test_every_write_carries_its_event_time_into_its_event(settings: IngestSettings) -> None:
    created = NOW - timedelta(days=10)
    traded, closed, resolved = (created + timedelta(days=d) for d in (1, 2, 3))
    async with app_client(create_app(settings)) as client:
        assert (
            await client.post("/v1/markets", json=market("m-h", occurred_at=created.isoformat()))
        ).status_code == 201
        early = await client.post("/v1/markets/m-h/close", json={"occurred_at": (created - timedelta(1)).isoformat()})
        assert early.status_code == 422 and locs(early) == [["body", "occurred_at"]]
        reply = await client.post(
            "/v1/trades/batch",
            json={"occurred_at": traded.isoformat(), "trades": [trade("m-h", trade_id="h-1", amount_estimated=True)]},
        )
        assert reply.status_code == 201
        stored = reply.json()["trades"][0]
        assert stored["amount_estimated"] is True and datetime.fromisoformat(stored["executed_at"]) == traded
        assert (await client.post("/v1/markets/m-h/close", json={"occurred_at": closed.isoformat()})).status_code == 200
        resolve = {"resolution": "YES", "occurred_at": resolved.isoformat()}
        assert (await client.post("/v1/markets/m-h/resolve", json=resolve)).status_code == 200
        day_ago = (NOW - timedelta(days=1)).isoformat()
        assert (await client.post("/v1/markets", json=market("m-c", occurred_at=day_ago))).status_code == 201
        cancel = {"reason": "void", "occurred_at": (NOW - timedelta(seconds=1)).isoformat()}
        assert (await client.post("/v1/markets/m-c/cancel", json=cancel)).status_code == 200

        lifecycle = await consume_until(settings.kafka_bootstrap_servers, "market.lifecycle.v1", lambda m: len(m) >= 5)
        trades = await consume_until(settings.kafka_bootstrap_servers, "market.trades.v1", lambda m: len(m) >= 1)
    times = {(e["market_id"], e["event_type"]): datetime.fromisoformat(e["occurred_at"]) for e in lifecycle}
    assert times[("m-h", "market.created")] == created
    assert times[("m-h", "market.closed")] == closed
    assert times[("m-h", "market.resolved")] == resolved
    assert times[("m-c", "market.cancelled")] == NOW - timedelta(seconds=1)
    assert trades[0]["amount_estimated"] is True
    assert datetime.fromisoformat(trades[0]["occurred_at"]) == traded
