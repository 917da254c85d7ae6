"""ingest's HTTP API against real PostgreSQL and Kafka: what is accepted is stored and published once,
what is refused gets a 4xx with field-level detail and publishes nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from om_cli.testing import app_client, consume_until
from om_ingest.app import create_app
from om_ingest.settings import IngestSettings

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(kafka_bootstrap: str, database_url: str) -> IngestSettings:
    return IngestSettings(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, DATABASE_URL=database_url)


def market_body(**overrides: object) -> dict:
    close_at = datetime.now(UTC) + timedelta(days=3)
    return {
        "market_id": f"m-{uuid.uuid4().hex[:8]}",
        "question": "Will it rain tomorrow?",
        "category": "weather",
        "close_at": close_at.isoformat(),
        "initial_price": 0.4,
        **overrides,
    }


def trade_body(market_id: str, **overrides: object) -> dict:
    return {
        "market_id": market_id,
        "user_id": "alice",
        "outcome": "YES",
        "amount": 10.0,
        "shares": 20.0,
        "price": 0.45,
        **overrides,
    }


async def test_market_and_trade_are_stored_and_published_once(settings: IngestSettings) -> None:
    async with app_client(create_app(settings)) as client:
        market = (await client.post("/v1/markets", json=market_body())).json()
        mid = market["market_id"]
        first = await client.post("/v1/trades", json=trade_body(mid, trade_id="t-1"))
        replay = await client.post("/v1/trades", json=trade_body(mid, trade_id="t-1"))
        assert (first.status_code, replay.status_code) == (201, 200)
        assert first.json()["price_before"] == 0.4
        stored = (await client.get(f"/v1/markets/{mid}")).json()
        assert stored["current_price"] == 0.45

        trades = await consume_until(settings.kafka_bootstrap_servers, "market.trades.v1", lambda m: len(m) >= 1)
        lifecycle = await consume_until(settings.kafka_bootstrap_servers, "market.lifecycle.v1", lambda m: len(m) >= 1)
    assert [t["trade_id"] for t in trades] == ["t-1"]
    assert trades[0]["price_before"] == 0.4 and trades[0]["price_after"] == 0.45
    assert lifecycle[0]["event_type"] == "market.created" and lifecycle[0]["market_id"] == mid


async def test_bad_input_is_refused_with_field_detail(settings: IngestSettings) -> None:
    async with app_client(create_app(settings)) as client:
        mid = (await client.post("/v1/markets", json=market_body())).json()["market_id"]

        bad_price = await client.post("/v1/trades", json=trade_body(mid, price=1.5))
        assert bad_price.status_code == 422
        assert ["body", "price"] in [e["loc"] for e in bad_price.json()["detail"]]

        bad_amount = await client.post("/v1/trades", json=trade_body(mid, amount=0))
        assert bad_amount.status_code == 422
        assert ["body", "amount"] in [e["loc"] for e in bad_amount.json()["detail"]]

        unknown = await client.post("/v1/trades", json=trade_body("no-such-market"))
        assert unknown.status_code == 404
        assert unknown.json()["detail"][0]["loc"] == ["body", "market_id"]

        duplicate = await client.post("/v1/markets", json=market_body(market_id=mid))
        assert duplicate.status_code == 409

        assert (await client.post(f"/v1/markets/{mid}/resolve", json={"resolution": "YES"})).status_code == 200
        again = await client.post(f"/v1/markets/{mid}/resolve", json={"resolution": "NO"})
        assert again.status_code == 409
        late = await client.post("/v1/trades", json=trade_body(mid))
        assert late.status_code == 409

        events = await consume_until(settings.kafka_bootstrap_servers, "market.lifecycle.v1", lambda m: len(m) >= 2)
    assert [e["event_type"] for e in events] == ["market.created", "market.resolved"]


async def test_batch_is_all_or_nothing(settings: IngestSettings) -> None:
    async with app_client(create_app(settings)) as client:
        mid = (await client.post("/v1/markets", json=market_body())).json()["market_id"]
        batch = {"trades": [trade_body(mid, trade_id="b-1"), trade_body("missing", trade_id="b-2")]}
        refused = await client.post("/v1/trades/batch", json=batch)
        assert refused.status_code == 404
        assert refused.json()["detail"][0]["loc"] == ["body", "trades", "1", "market_id"]
        assert (await client.get(f"/v1/markets/{mid}/trades")).json() == []

        ok = await client.post(
            "/v1/trades/batch", json={"trades": [trade_body(mid, trade_id=f"c-{i}") for i in range(5)]}
        )
        assert ok.status_code == 201 and ok.json()["recorded"] == 5


async def test_replays_are_idempotent_and_path_errors_point_at_the_path(settings: IngestSettings) -> None:
    async with app_client(create_app(settings)) as client:
        mid = (await client.post("/v1/markets", json=market_body())).json()["market_id"]
        signal = {"signal_id": "s-1", "market_id": mid, "kind": "news", "source": "wire", "text": "Rain likely"}
        assert (await client.post("/v1/signals", json=signal)).status_code == 201
        assert (await client.post("/v1/signals", json=signal)).status_code == 200
        changed = await client.post("/v1/signals", json={**signal, "text": "Sunny"})
        assert changed.status_code == 409 and changed.json()["detail"][0]["loc"] == ["body", "signal_id"]

        missing = await client.post("/v1/markets/nope/close")
        assert missing.status_code == 404 and missing.json()["detail"][0]["loc"] == ["path", "market_id"]
        assert (await client.post(f"/v1/markets/{mid}/cancel")).status_code == 200  # the body is optional

        events = await consume_until(settings.kafka_bootstrap_servers, "market.signals.v1", lambda m: len(m) >= 1)
    assert [e["signal_id"] for e in events] == ["s-1"]


async def test_signal_batch_is_all_or_nothing_idempotent_by_id_and_keeps_event_times(settings: IngestSettings) -> None:
    async with app_client(create_app(settings)) as client:
        mid = (await client.post("/v1/markets", json=market_body())).json()["market_id"]
        at = (datetime.now(UTC) - timedelta(minutes=5)).replace(microsecond=0)

        def signal(n: int, **overrides: object) -> dict:
            body = {"signal_id": f"sb-{n}", "market_id": mid, "kind": "news", "source": "wire", "text": f"item {n}"}
            return {**body, "occurred_at": (at + timedelta(seconds=n)).isoformat(), **overrides}

        refused = await client.post("/v1/signals/batch", json={"signals": [signal(0), signal(1, market_id="nope")]})
        assert refused.status_code == 404
        assert refused.json()["detail"][0]["loc"] == ["body", "signals", "1", "market_id"]
        in_future = signal(1, occurred_at=(datetime.now(UTC) + timedelta(days=1)).isoformat())
        too_late = await client.post("/v1/signals/batch", json={"signals": [signal(0), in_future]})
        assert too_late.status_code == 422
        assert too_late.json()["detail"][0]["loc"] == ["body", "signals", "1", "occurred_at"]

        ok = await client.post("/v1/signals/batch", json={"signals": [signal(n) for n in range(3)]})
        assert ok.status_code == 201 and ok.json()["recorded"] == 3
        assert [datetime.fromisoformat(s["observed_at"]) for s in ok.json()["signals"]] == [
            at + timedelta(seconds=n) for n in range(3)
        ]
        # a known id is a replay (not recorded again), a new one in the same batch is recorded
        again = await client.post("/v1/signals/batch", json={"signals": [signal(n) for n in range(4)]})
        assert again.status_code == 201 and again.json()["recorded"] == 1
        assert (await client.post("/v1/signals", json=signal(2))).status_code == 200  # same as a single write
        changed = await client.post("/v1/signals/batch", json={"signals": [signal(4), signal(0, text="Sunny")]})
        assert changed.status_code == 409
        assert changed.json()["detail"][0]["loc"] == ["body", "signals", "1", "signal_id"]

        events = await consume_until(settings.kafka_bootstrap_servers, "market.signals.v1", lambda m: len(m) >= 4)
    assert sorted(e["signal_id"] for e in events) == [f"sb-{n}" for n in range(4)]  # the refused batches added none
    assert {e["signal_id"]: datetime.fromisoformat(e["occurred_at"]) for e in events}["sb-1"] == at + timedelta(
        seconds=1
    )
