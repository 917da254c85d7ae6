"""Raw upstream intake on real Kafka and PostgreSQL: valid records on ingest.raw-*.v1 are recorded like HTTP
writes (and published once, even when a producer sends them twice); invalid ones go to the dead-letter topic with
the reason and the original bytes, and the records around them are still recorded."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from om_cli.testing import app_client, consume_until, eventually, produce
from om_ingest.app import create_app
from om_ingest.settings import IngestSettings

pytestmark = pytest.mark.integration


def trade(mid: str, tid: str, **fields: object) -> bytes:
    doc = {"trade_id": tid, "market_id": mid, "user_id": "u1", "outcome": "YES", "amount": 5.0, "shares": 10.0}
    return json.dumps({**doc, "price": 0.5, **fields}).encode()


async def test_raw_records_are_recorded_and_bad_ones_dead_lettered(kafka_bootstrap: str, database_url: str) -> None:
    settings = IngestSettings(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, DATABASE_URL=database_url)
    close_at = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    market = json.dumps({"market_id": "m-raw", "question": "Rain?", "close_at": close_at}).encode()
    bad = {
        b"not json at all": "invalid ingest.raw-trades.v1",
        trade("m-raw", "t-nan").replace(b"5.0", b"NaN"): "amount",
        trade("m-nowhere", "t-lost"): "does not exist",
        trade("m-raw", "t-1", amount=6.0): "recorded with different amount",  # t-1 again, changed
        trade("m-raw", "t-future", occurred_at=(datetime.now(UTC) + timedelta(days=1)).isoformat()): "future",
    }
    async with app_client(create_app(settings)) as client:
        await produce(kafka_bootstrap, "ingest.raw-markets.v1", [market, market], key=b"m-raw")  # sent twice

        async def market_exists() -> None:
            assert (await client.get("/v1/markets/m-raw")).status_code == 200

        await eventually(market_exists)
        good = [trade("m-raw", f"t-{i}") for i in range(1, 6)]
        await produce(kafka_bootstrap, "ingest.raw-trades.v1", [good[0], *bad, *good, good[1]], key=b"m-raw")
        signal = b'{"signal_id": "s-1", "market_id": "m-raw", "kind": "news", "source": "wire", "text": "Rain"}'
        await produce(kafka_bootstrap, "ingest.raw-signals.v1", [signal, b'{"signal_id": "s-2"}'], key=b"m-raw")

        letters = await consume_until(kafka_bootstrap, "platform.dead-letters.v1", lambda m: len(m) >= len(bad) + 1)

        async def recorded() -> list[dict]:
            trades = (await client.get("/v1/markets/m-raw/trades")).json()
            assert len(trades) == 5
            return trades

        trades = await eventually(recorded)
        published = await consume_until(kafka_bootstrap, "market.trades.v1", lambda m: len(m) >= 5)
        signals = await consume_until(kafka_bootstrap, "market.signals.v1", lambda m: len(m) >= 1)
        lifecycle = await consume_until(kafka_bootstrap, "market.lifecycle.v1", lambda m: len(m) >= 1)
    assert sorted(t["trade_id"] for t in trades) == [f"t-{i}" for i in range(1, 6)]
    assert sorted(e["trade_id"] for e in published) == [f"t-{i}" for i in range(1, 6)]  # once each
    assert [e["signal_id"] for e in signals] == ["s-1"]
    assert [e["event_type"] for e in lifecycle] == ["market.created"]
    by_payload = {base64.b64decode(letter["payload_base64"]): letter for letter in letters}
    for payload, why in bad.items():
        assert why in by_payload[payload]["reason"], by_payload[payload]["reason"]
        assert by_payload[payload]["original_topic"] == "ingest.raw-trades.v1"
    assert by_payload[b'{"signal_id": "s-2"}']["original_topic"] == "ingest.raw-signals.v1"
