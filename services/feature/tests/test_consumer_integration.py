"""feature as a Kafka consumer against a real broker, PostgreSQL and Redis: good events become feature vectors,
a malformed one goes to the dead-letter topic with its reason and bytes, and the consumer keeps going."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from om_cli.testing import app_client, consume_until, produce
from om_contracts import MarketCreated, TradeExecuted, encode
from om_feature.app import create_app
from om_feature.settings import FeatureSettings

pytestmark = pytest.mark.integration


def created(market_id: str) -> MarketCreated:
    now = datetime.now(UTC)
    return MarketCreated(
        occurred_at=now,
        producer="test",
        market_id=market_id,
        question="Will the test pass?",
        category="testing",
        close_at=now + timedelta(days=2),
        initial_price=0.5,
    )


def trade(market_id: str, user: str, price: float, amount: float) -> TradeExecuted:
    return TradeExecuted(
        occurred_at=datetime.now(UTC),
        producer="test",
        trade_id=f"t-{uuid.uuid4().hex[:8]}",
        market_id=market_id,
        user_id=user,
        outcome="YES",
        amount=amount,
        shares=amount / price,
        price_before=0.5,
        price_after=price,
    )


async def test_bad_event_is_dead_lettered_and_good_ones_still_flow(
    kafka_bootstrap: str, database_url: str, redis_url: str
) -> None:
    settings = FeatureSettings(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, DATABASE_URL=database_url, REDIS_URL=redis_url)
    market = f"m-{uuid.uuid4().hex[:8]}"
    opened = created(market)
    first, second = trade(market, "alice", 0.6, 10.0), trade(market, "bob", 0.7, 5.0)
    garbage = b'{"event_type": "trade.executed", "market_id": "' + market.encode() + b'", "amount": -3}'
    async with app_client(create_app(settings)) as client:
        await produce(kafka_bootstrap, "market.lifecycle.v1", [encode(opened)], key=market.encode())
        await produce(
            kafka_bootstrap,
            "market.trades.v1",
            [encode(first), b"not json at all", garbage, encode(second), encode(second)],  # and a redelivery
            key=market.encode(),
        )
        letters = await consume_until(kafka_bootstrap, "platform.dead-letters.v1", lambda m: len(m) >= 2)
        vectors = await consume_until(
            kafka_bootstrap,
            "feature.vectors.v1",
            lambda m: any(v["source_event_id"] == str(second.event_id) for v in m),
        )
        online = (await client.get(f"/v1/markets/{market}/features")).json()

    assert {base64.b64decode(d["payload_base64"]) for d in letters} == {b"not json at all", garbage}
    assert all(d["consumer"] == "feature" and d["original_topic"] == "market.trades.v1" for d in letters)
    assert any("amount" in d["reason"] for d in letters)

    # Coalesced by event time (all three events fall within 100 ms): few vectors, distinct ids, and the last one
    # includes both trades once each — the redelivered trade changed nothing.
    assert 1 <= len(vectors) <= 3 and len({v["event_id"] for v in vectors}) == len(vectors)
    latest = vectors[-1]["features"]
    assert latest["current_price"] == 0.7
    assert latest["total_volume"] == 15.0
    assert latest["participant_count"] == 2 and latest["trade_count"] == 2
    assert 1.9 < latest["days_remaining"] <= 2.0
    assert online["features"] == latest


async def test_event_that_cannot_be_applied_is_dead_lettered_and_the_rest_applied(
    kafka_bootstrap: str, database_url: str, redis_url: str
) -> None:
    """Valid JSON with an amount that overflows to infinity, which must never enter state: the contract refuses it
    at decode, so it is dead-lettered with the reason and neither blocks the events around it nor is retried."""
    settings = FeatureSettings(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, DATABASE_URL=database_url, REDIS_URL=redis_url)
    market = f"m-{uuid.uuid4().hex[:8]}"
    before, poison, after = (
        trade(market, "alice", 0.6, 10.0),
        trade(market, "mallory", 0.9, 1.0),
        trade(market, "bob", 0.7, 5.0),
    )
    poison_bytes = encode(poison).replace(b'"amount":1.0', b'"amount":1e400')
    assert poison_bytes != encode(poison)
    async with app_client(create_app(settings)):
        await produce(kafka_bootstrap, "market.lifecycle.v1", [encode(created(market))], key=market.encode())
        await produce(
            kafka_bootstrap, "market.trades.v1", [encode(before), poison_bytes, encode(after)], key=market.encode()
        )
        letters = await consume_until(kafka_bootstrap, "platform.dead-letters.v1", lambda m: len(m) >= 1)
        vectors = await consume_until(
            kafka_bootstrap, "feature.vectors.v1", lambda m: any(v["source_event_id"] == str(after.event_id) for v in m)
        )
    [letter] = letters
    assert base64.b64decode(letter["payload_base64"]) == poison_bytes
    assert "amount" in letter["reason"] and "finite" in letter["reason"]
    latest = vectors[-1]["features"]
    assert (latest["trade_count"], latest["total_volume"], latest["participant_count"]) == (2, 15.0, 2)


async def test_batch_span_links_the_events_traces_vectors_carry_it_and_events_are_counted(
    kafka_bootstrap: str, database_url: str, redis_url: str
) -> None:
    """The single-trace walk's hops through feature: a "feature process" batch span linked to the trade's trace
    (W3C traceparent in its Kafka headers), a "feature.vectors.v1 publish" child whose context the vectors carry,
    and the consumed events counted in the runtime's om_consumer_events_total."""
    memory = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    settings = FeatureSettings(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, DATABASE_URL=database_url, REDIS_URL=redis_url)
    market = f"m-{uuid.uuid4().hex[:8]}"
    trace_id, parent = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    traceparent = f"00-{trace_id}-{parent}-01".encode()
    try:
        async with app_client(create_app(settings)) as client:
            producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=False)
            await producer.start()
            try:
                await producer.send_and_wait("market.lifecycle.v1", encode(created(market)), key=market.encode())
                await producer.send_and_wait(
                    "market.trades.v1",
                    encode(trade(market, "alice", 0.6, 10.0)),
                    key=market.encode(),
                    headers=[("traceparent", traceparent)],
                )
            finally:
                await producer.stop()
            await consume_until(
                kafka_bootstrap, "feature.vectors.v1", lambda m: any(v["features"]["trade_count"] for v in m)
            )
            metrics = (await client.get("/metrics")).text
        headers = await _vector_headers(kafka_bootstrap)
    finally:
        memory.shutdown()
    batch = next(s for s in memory.get_finished_spans() if s.name == "feature process" and s.links)
    assert any(f"{link.context.trace_id:032x}" == trace_id for link in batch.links)
    publishes = [s for s in memory.get_finished_spans() if s.name == "feature.vectors.v1 publish"]
    # Inside the batch span, or inside an idle flush's span that links to the batches it publishes for.
    by_id = {s.context.span_id: s for s in memory.get_finished_spans()}
    parents = [by_id[s.parent.span_id] for s in publishes if s.parent is not None]
    assert len(parents) == len(publishes)
    assert all(p.name == "feature process" or (p.name == "feature flush" and p.links) for p in parents)
    publish_ids = {f"{s.context.span_id:016x}" for s in publishes}
    assert headers and all(h.get("traceparent", b"").decode().split("-")[2] in publish_ids for h in headers)
    assert 'om_consumer_events_total{consumer="feature",topic="market.trades.v1"} 1.0' in metrics


async def _vector_headers(bootstrap: str) -> list[dict[str, bytes]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=10)
    await consumer.start()
    try:
        await consumer.topics()
        partitions = [
            TopicPartition("feature.vectors.v1", p) for p in consumer.partitions_for_topic("feature.vectors.v1") or ()
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning()
        batch = await consumer.getmany(timeout_ms=2000)
        return [dict(r.headers) for records in batch.values() for r in records]
    finally:
        await consumer.stop()
