"""Retries on real PostgreSQL and Kafka, sent truly at once (asyncio.gather over ASGI, a pool of connections):
the same trade or signal id gives the first result (201, then 200 replays) or a 409, never a 500 and never a
second event; the `Idempotency-Key` header replays the first reply for the same request and refuses (409) a
different request under the same key, and keys expire."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from om_cli.testing import app_client, consume_until
from om_ingest.app import create_app
from om_ingest.settings import IngestSettings

pytestmark = pytest.mark.integration

N = 12


@pytest.fixture
def settings(kafka_bootstrap: str, database_url: str) -> IngestSettings:
    return IngestSettings(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, DATABASE_URL=database_url, DATABASE_POOL_SIZE=8, idempotency_ttl_s=2
    )


def market(mid: str) -> dict:
    return {"market_id": mid, "question": "Q?", "close_at": (datetime.now(UTC) + timedelta(days=3)).isoformat()}


def trade(mid: str, **fields: object) -> dict:
    return {"market_id": mid, "user_id": "u1", "outcome": "YES", "amount": 5.0, "shares": 10.0, "price": 0.5, **fields}


async def at_once(client: httpx.AsyncClient, path: str, bodies: list[dict], **kw: object) -> list[httpx.Response]:
    return await asyncio.gather(*(client.post(path, json=b, **kw) for b in bodies))


async def events_until(settings: IngestSettings, topic: str, last_id: str, id_field: str) -> Counter[str]:
    """Every event of `topic` up to the one with `last_id` (written last, on the same market: so after all)."""
    events = await consume_until(
        settings.kafka_bootstrap_servers, topic, lambda m: any(e[id_field] == last_id for e in m)
    )
    return Counter(e[id_field] for e in events)


async def test_concurrent_retries_of_one_trade_record_it_once(settings: IngestSettings) -> None:
    async with app_client(create_app(settings)) as client:
        for mid in ("m-a", "m-b"):
            assert (await client.post("/v1/markets", json=market(mid))).status_code == 201
        replies = await at_once(client, "/v1/trades", [trade("m-a", trade_id="t-1")] * N)
        assert sorted(r.status_code for r in replies) == [200] * (N - 1) + [201]
        assert len({r.json()["trade_id"] for r in replies}) == 1

        # The same id for two markets at once: one is recorded, the other is a conflict, never a 500.
        clash = await at_once(client, "/v1/trades", [trade("m-a", trade_id="t-2"), trade("m-b", trade_id="t-2")])
        assert sorted(r.status_code for r in clash) == [201, 409]

        # Batches overlapping each other at once: every trade once.
        batches = [{"trades": [trade("m-a", trade_id=f"b-{i}") for i in range(k, k + 5)]} for k in range(0, 10, 2)]
        assert {r.status_code for r in await at_once(client, "/v1/trades/batch", batches)} <= {201, 409}
        await client.post("/v1/trades/batch", json={"trades": [trade("m-a", trade_id=f"b-{i}") for i in range(14)]})

        assert (await client.post("/v1/trades", json=trade("m-a", trade_id="t-end"))).status_code == 201
        counts = await events_until(settings, "market.trades.v1", "t-end", "trade_id")
    assert counts["t-1"] == 1 and counts["t-2"] == 1
    assert all(counts[f"b-{i}"] == 1 for i in range(14))


async def test_concurrent_retries_of_one_signal_publish_one_event(settings: IngestSettings) -> None:
    signal = {"signal_id": "s-1", "market_id": "m-s", "kind": "news", "source": "wire", "text": "Rain"}
    async with app_client(create_app(settings)) as client:
        assert (await client.post("/v1/markets", json=market("m-s"))).status_code == 201
        replies = await at_once(client, "/v1/signals", [signal] * N)
        assert sorted(r.status_code for r in replies) == [200] * (N - 1) + [201]
        changed = await at_once(
            client, "/v1/signals", [{**signal, "signal_id": "s-2"}, {**signal, "signal_id": "s-2", "text": "Sun"}]
        )
        assert sorted(r.status_code for r in changed) == [201, 409]
        assert (await client.post("/v1/signals", json={**signal, "signal_id": "s-end"})).status_code == 201
        counts = await events_until(settings, "market.signals.v1", "s-end", "signal_id")
    assert counts["s-1"] == 1 and counts["s-2"] == 1


async def test_idempotency_key_replays_the_first_reply(settings: IngestSettings) -> None:
    async with app_client(create_app(settings)) as client:
        key = {"Idempotency-Key": "create-m-k"}
        first = await client.post("/v1/markets", json=market("m-k"), headers=key)
        again = await client.post("/v1/markets", json={**market("m-k"), "close_at": first.json()["close_at"]})
        assert (first.status_code, again.status_code) == (201, 409)  # without the key a retry is a conflict...
        body = {**market("m-k"), "close_at": first.json()["close_at"]}
        replay = await client.post("/v1/markets", json=body, headers=key)
        assert replay.status_code == 201 and replay.json() == first.json()  # ...with it, the first reply
        assert replay.headers["Idempotency-Replayed"] == "true"

        # Trades without a trade_id: the key alone keeps N concurrent retries to one trade.
        replies = await at_once(client, "/v1/trades", [trade("m-k")] * N, headers={"Idempotency-Key": "buy-1"})
        assert {r.status_code for r in replies} == {201}
        assert len({r.json()["trade_id"] for r in replies}) == 1
        assert len((await client.get("/v1/markets/m-k/trades")).json()) == 1

        other = await client.post("/v1/trades", json=trade("m-k", amount=6.0), headers={"Idempotency-Key": "buy-1"})
        assert other.status_code == 409
        assert other.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
        assert "different request" in other.json()["detail"][0]["msg"]

        # A refused write stores nothing under its key: fixed, the retry is applied.
        bad = await client.post("/v1/trades", json=trade("nope"), headers={"Idempotency-Key": "buy-2"})
        assert bad.status_code == 404
        good = await client.post("/v1/trades", json=trade("m-k"), headers={"Idempotency-Key": "buy-2"})
        assert good.status_code == 201

        close = await client.post("/v1/markets/m-k/close", headers={"Idempotency-Key": "close-1"})
        assert close.status_code == 200
        assert (await client.post("/v1/markets/m-k/close", headers={"Idempotency-Key": "close-1"})).status_code == 200
        assert (await client.post("/v1/markets/m-k/close")).status_code == 409  # a new close, refused

        await asyncio.sleep(2.1)  # idempotency_ttl_s=2: the key is free for a new request
        expired = await client.post("/v1/markets", json=market("m-k2"), headers=key)
        assert expired.status_code == 201 and expired.json()["market_id"] == "m-k2"
        events = await consume_until(settings.kafka_bootstrap_servers, "market.trades.v1", lambda m: len(m) >= 2)
    assert len(events) == 2
