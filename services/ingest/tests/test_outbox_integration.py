"""The outbox relay on real PostgreSQL and Kafka: a crash between publish and marking published republishes (same
event ids, nothing lost), relays racing each other publish every event once and in order per market, with the broker
down writes keep succeeding and the backlog flows, in order per market, once it is back, and a broker that comes back
without its log gets the events it had confirmed again."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from om_cli.embedded import EmbeddedKafka, free_port
from om_cli.testing import app_client, eventually
from om_contracts import utcnow
from om_contracts.api import MarketIn, TradeIn
from om_ingest.app import MIGRATIONS, create_app
from om_ingest.commands import Ingest
from om_ingest.outbox import SLOTS, publish_pending, relay
from om_ingest.settings import IngestSettings
from om_runtime.db import Database
from om_runtime.kafka import EventPublisher, create_broker, ensure_topics

pytestmark = pytest.mark.integration

MARKETS = ["m-a", "m-b", "m-c", "m-d"]
ALL_SLOTS = list(range(SLOTS))


class RelayCrashed(Exception):
    pass


class CrashAfterConfirm(EventPublisher):
    """A relay that dies at the worst moment: Kafka has confirmed every event, the delete has not committed."""

    @contextlib.asynccontextmanager
    async def confirmed_together(self) -> AsyncIterator[None]:
        async with super().confirmed_together():
            yield
        raise RelayCrashed("killed after Kafka confirmed the batch, before its delete committed")


@contextlib.asynccontextmanager
async def database(url: str) -> AsyncIterator[Database]:
    async with Database(url, schema="ingest", migrations=MIGRATIONS, pool_size=4) as db:
        yield db


@contextlib.asynccontextmanager
async def publisher(bootstrap: str, cls: type[EventPublisher] = EventPublisher) -> AsyncIterator[EventPublisher]:
    broker = create_broker(bootstrap, client_id="outbox-test")
    await broker.start()
    try:
        yield cls(broker)
    finally:
        await broker.stop()


async def write_trades(db: Database, per_market: int) -> None:
    """Each trade in its own transaction, markets interleaved: trade i of a market is `<market>-<i>`."""
    ingest = Ingest(db)
    close_at = datetime.now(UTC) + timedelta(days=1)
    async with db.transaction() as conn:
        for mid in MARKETS:
            await ingest.create_market(conn, MarketIn(market_id=mid, question="Q?", close_at=close_at), utcnow())
    for i in range(per_market):
        for mid in MARKETS:
            trade = TradeIn(
                trade_id=f"{mid}-{i:04d}", market_id=mid, user_id="u", outcome="YES", amount=1, shares=2, price=0.5
            )
            async with db.transaction() as conn:
                await ingest.record_trades(conn, [trade], utcnow())


async def pending(db: Database) -> int:
    async with db.transaction() as conn:
        return (await (await conn.execute("SELECT count(*) AS n FROM outbox WHERE published_at IS NULL")).fetchone())[
            "n"
        ]


async def read_all(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """Every message of `topic` up to its current end, in partition order."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=10)
    await consumer.start()
    try:
        # Ask for this topic's metadata by name: the embedded broker leaves topics it re-created on demand out
        # of the list of all topics.
        await consumer._client.add_topic(topic)
        partitions = [TopicPartition(topic, p) for p in consumer._client.cluster.partitions_for_topic(topic) or ()]
        assert partitions, f"{topic} does not exist (yet)"
        consumer.assign(partitions)
        await consumer.seek_to_beginning()
        ends = await consumer.end_offsets(partitions)
        messages: list[dict[str, Any]] = []
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                messages.extend(json.loads(r.value) for r in records)
        return messages
    finally:
        await consumer.stop()


def by_market(events: list[dict[str, Any]]) -> dict[str, list[str]]:
    order: dict[str, list[str]] = defaultdict(list)
    for e in events:
        order[e["market_id"]].append(e["trade_id"])
    return order


async def test_a_crash_between_publish_and_delete_republishes_the_same_events(
    kafka_bootstrap: str, database_url: str
) -> None:
    await ensure_topics(kafka_bootstrap)
    async with database(database_url) as db:
        await write_trades(db, per_market=5)
        async with publisher(kafka_bootstrap, CrashAfterConfirm) as crashing:
            with pytest.raises(RelayCrashed):
                await publish_pending(db, crashing, 1000, ALL_SLOTS)
        assert await pending(db) == 24  # rolled back: every row (4 markets, 20 trades) is still there
        async with publisher(kafka_bootstrap) as healthy:
            assert await publish_pending(db, healthy, 1000, ALL_SLOTS) == 24
        assert await pending(db) == 0
    events = await read_all(kafka_bootstrap, "market.trades.v1")
    assert len(events) == 40
    ids: dict[str, set[str]] = defaultdict(set)
    for e in events:
        ids[e["trade_id"]].add(e["event_id"])
    assert len(ids) == 20 and all(len(v) == 1 for v in ids.values())  # a republish carries the same event id
    for mid, trades in by_market(events).items():
        first, again = trades[:5], trades[5:]
        assert first == again == [f"{mid}-{i:04d}" for i in range(5)]


async def test_relays_racing_publish_each_event_once_in_order_per_market(
    kafka_bootstrap: str, database_url: str
) -> None:
    await ensure_topics(kafka_bootstrap)
    async with database(database_url) as db_one, database(database_url) as db_two:
        writing = asyncio.create_task(write_trades(db_one, per_market=60))
        async with publisher(kafka_bootstrap) as one, publisher(kafka_bootstrap) as two:
            # Two "processes", sharded differently: the per-slot locks keep them apart anyway.
            relays = [
                asyncio.create_task(relay(db_one, one, batch_size=7, poll_interval_s=0.05, shards=3)),
                asyncio.create_task(relay(db_two, two, batch_size=5, poll_interval_s=0.05, shards=4)),
            ]
            await writing

            async def drained() -> None:
                assert await pending(db_one) == 0

            await eventually(drained)
            for task in relays:
                task.cancel()
            await asyncio.gather(*relays, return_exceptions=True)
    events = await read_all(kafka_bootstrap, "market.trades.v1")
    assert len(events) == len({e["event_id"] for e in events}) == 240
    for mid, trades in by_market(events).items():
        assert trades == [f"{mid}-{i:04d}" for i in range(60)]


def trade(mid: str, i: int) -> dict:
    return {
        "trade_id": f"{mid}-{i:04d}",
        "market_id": mid,
        "user_id": "u",
        "outcome": "YES",
        "amount": 1.0,
        "shares": 2.0,
        "price": 0.5,
    }


async def test_ingest_starts_and_stays_ready_without_the_broker_and_writes_flow_once_it_is_back(
    database_url: str, tmp_path: Path
) -> None:
    kafka = EmbeddedKafka("kafka", free_port(), tmp_path / "kafka")  # not started yet
    settings = IngestSettings(
        KAFKA_BOOTSTRAP_SERVERS=kafka.url,
        DATABASE_URL=database_url,
        outbox_poll_interval_s=0.1,
        outbox_confirm_timeout_s=1.0,
    )

    async def delivered(count: int) -> list[dict[str, Any]]:
        events = await read_all(kafka.url, "market.trades.v1")
        assert len({e["trade_id"] for e in events}) == count
        return events

    try:
        async with app_client(create_app(settings)) as client:
            ready = await client.get("/ready")
            assert ready.status_code == 200 and ready.json()["checks"]["kafka"] != "ok"
            close_at = (datetime.now(UTC) + timedelta(days=1)).isoformat()
            for mid in MARKETS:
                body = {"market_id": mid, "question": "Q?", "close_at": close_at}
                assert (await client.post("/v1/markets", json=body)).status_code == 201
            for mid in MARKETS:
                assert (await client.post("/v1/trades", json=trade(mid, 0))).status_code == 201
            kafka.start()
            await eventually(lambda: delivered(4), timeout_s=60)

            kafka.stop()  # down again, mid-stream
            for i in range(1, 30):
                for mid in MARKETS:
                    assert (await client.post("/v1/trades", json=trade(mid, i))).status_code == 201
            assert (await client.get("/ready")).status_code == 200
            await asyncio.sleep(1.5)  # longer than the confirmation timeout: the relay has noticed
            kafka.start()  # an empty broker: the in-memory one forgot its topics and events
            # ... including the 4 it had confirmed before: the relay notices and publishes them again
            events = await eventually(lambda: delivered(120), timeout_s=90)
    finally:
        kafka.stop()
    for mid, trades in by_market(events).items():
        # Every event written while the broker was down arrives, and the relay's last, confirmed publish of the
        # backlog is in order. Before it, parts of batches that were unconfirmed when the broker died or came
        # back may arrive too (same event ids; an at-least-once outbox without an idempotent producer cannot
        # prevent that).
        last_seen = {trade_id: position for position, trade_id in enumerate(trades)}
        assert sorted(last_seen, key=last_seen.__getitem__) == [f"{mid}-{i:04d}" for i in range(30)], " ".join(
            t[-2:] for t in trades
        )
