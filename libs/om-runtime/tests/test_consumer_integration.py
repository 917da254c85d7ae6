"""The runtime's group consumer against a real broker (Tansu) and PostgreSQL: offsets saved with the effects, event-id
dedupe, poison vs systemic failures, stateful listeners with seeking and offset regressions, and a service that
starts while Kafka is down."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis.exceptions
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from om_cli.embedded import EmbeddedKafka, free_port
from om_cli.testing import app_client, consume_until, eventually, produce
from om_contracts import TradeExecuted, encode
from om_contracts.topics import DEAD_LETTERS, MARKET_TRADES, TOPICS
from om_runtime.db import Database
from om_runtime.kafka import Delivery, ensure_topics
from om_runtime.service import ServiceRuntime
from om_runtime.settings import ServiceSettings

pytestmark = pytest.mark.integration

TRADES = MARKET_TRADES.name


def trade(trade_id: str, market: str = "m1") -> TradeExecuted:
    return TradeExecuted(
        occurred_at=datetime.now(UTC),
        producer="test",
        trade_id=trade_id,
        market_id=market,
        user_id="alice",
        outcome="YES",
        amount=10.0,
        shares=16.0,
        price_before=0.5,
        price_after=0.6,
    )


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        await consumer.topics()
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return {tp.partition: offset for tp, offset in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()


def settings(bootstrap: str) -> ServiceSettings:
    return ServiceSettings(service_name="svc", KAFKA_BOOTSTRAP_SERVERS=bootstrap)


@pytest.fixture
async def kafka(kafka_bootstrap: str) -> str:
    """The test's broker with the registry's topics (as services create them), before anything is produced."""
    await ensure_topics(kafka_bootstrap)
    return kafka_bootstrap


@pytest.fixture
def migrations(tmp_path: Path) -> Path:
    (tmp_path / "0001_applied.sql").write_text("CREATE TABLE applied (trade_id text NOT NULL);\n")
    return tmp_path


class Applier:
    """A batch handler that records each trade it applies, and fails the way a test tells it to."""

    def __init__(self) -> None:
        self.fail: Any = None  # called with the trade; may raise

    async def __call__(self, events: list[tuple[Any, Any]], conn: psycopg.AsyncConnection) -> None:
        for _, event in events:
            if self.fail is not None:
                self.fail(event)
            await conn.execute("INSERT INTO applied (trade_id) VALUES (%s)", (event.trade_id,))


@asynccontextmanager
async def transactional_service(
    bootstrap: str, database_url: str, migrations: Path, applier: Applier
) -> AsyncIterator[tuple[ServiceRuntime, Database]]:
    runtime = ServiceRuntime(settings(bootstrap))
    db = Database(database_url, schema="svc", migrations=migrations)
    runtime.add_resource(db, name="postgres", check=db.ping)
    runtime.consume_in_transaction(db, applier, topics=(MARKET_TRADES,))
    async with runtime.running():
        yield runtime, db


async def applied(db: Database) -> list[str]:
    async with db.pool.connection() as conn:
        cur = await conn.execute("SELECT trade_id FROM applied ORDER BY trade_id")
        return [row["trade_id"] for row in await cur.fetchall()]


def sample(runtime: ServiceRuntime, name: str, **labels: str) -> float:
    return runtime.registry.get_sample_value(name, labels) or 0.0


async def test_events_apply_once_across_restarts_and_republished_duplicates(
    kafka: str, database_url: str, migrations: Path
) -> None:
    first = [trade(f"t{i}") for i in range(3)]
    await produce(kafka, TRADES, [encode(t) for t in first] + [encode(first[0])], key=b"m1")
    async with transactional_service(kafka, database_url, migrations, Applier()) as (_, db):

        async def three_applied() -> None:
            assert await applied(db) == ["t0", "t1", "t2"]

        await eventually(three_applied)
        async with db.pool.connection() as conn:
            cur = await conn.execute("SELECT topic, next_offset FROM consumer_offsets WHERE consumer = 'svc'")
            saved = await cur.fetchall()
    # the duplicate (same event id, another offset) changed nothing, yet its offset was consumed
    assert [(r["topic"], r["next_offset"]) for r in saved] == [(TRADES, 4)]

    await produce(kafka, TRADES, [encode(trade("t3"))], key=b"m1")
    async with transactional_service(kafka, database_url, migrations, Applier()) as (_, db):

        async def four_applied() -> None:
            assert await applied(db) == ["t0", "t1", "t2", "t3"]

        await eventually(four_applied)
        await asyncio.sleep(0.5)  # a redelivery from the start would show up as doubles now
        assert await applied(db) == ["t0", "t1", "t2", "t3"]


async def test_applied_events_move_the_processing_latency_histogram(
    kafka: str, database_url: str, migrations: Path
) -> None:
    minute_old = [
        trade(f"t{i}").model_copy(update={"occurred_at": datetime.now(UTC) - timedelta(seconds=60)}) for i in range(3)
    ]
    await produce(kafka, TRADES, [encode(t) for t in minute_old], key=b"m1")
    async with transactional_service(kafka, database_url, migrations, Applier()) as (runtime, db):

        async def three_applied() -> None:
            assert await applied(db) == ["t0", "t1", "t2"]

        await eventually(three_applied)
        name, labels = "om_consumer_processing_latency_seconds", {"consumer": "svc", "topic": TRADES}
        assert sample(runtime, f"{name}_count", **labels) == 3
        # Event time → applied: a minute and the time taken to apply them, so above 30 s and below 300 s.
        assert sample(runtime, f"{name}_bucket", **labels, le="30.0") == 0
        assert sample(runtime, f"{name}_bucket", **labels, le="300.0") == 3
        assert 180 <= sample(runtime, f"{name}_sum", **labels) < 900
        assert sample(runtime, "om_consumer_events_total", **labels) == 3


async def test_an_event_that_fails_alone_is_dead_lettered_and_the_rest_applied(
    kafka: str, database_url: str, migrations: Path
) -> None:
    applier = Applier()

    def reject_bad(event: TradeExecuted) -> None:
        if event.trade_id == "bad":
            raise ValueError("this trade cannot be applied")

    applier.fail = reject_bad
    trades = [trade("a"), trade("b"), trade("bad"), trade("c"), trade("d")]
    await produce(kafka, TRADES, [encode(t) for t in trades], key=b"m1")
    async with transactional_service(kafka, database_url, migrations, applier) as (runtime, db):

        async def four_applied() -> None:
            assert await applied(db) == ["a", "b", "c", "d"]

        await eventually(four_applied)
        [letter] = await consume_until(kafka, DEAD_LETTERS.name, lambda m: len(m) >= 1)
        assert letter["consumer"] == "svc" and letter["original_topic"] == TRADES
        assert str(trades[2].event_id) in letter["reason"]
        assert "ValueError: this trade cannot be applied" in letter["reason"]
        assert sample(runtime, "om_consumer_dead_letters_total", consumer="svc", topic=TRADES, cause="apply") == 1
        assert sample(runtime, "om_consumer_systemic_failures_total", consumer="svc", error="ValueError") == 0


async def test_redis_refusing_writes_is_systemic_retried_and_nothing_dead_lettered(
    kafka: str, database_url: str, migrations: Path
) -> None:
    applier = Applier()
    refusals = {"left": 3}

    def out_of_memory(event: TradeExecuted) -> None:
        if refusals["left"] > 0:
            refusals["left"] -= 1
            raise redis.exceptions.ResponseError("OOM command not allowed when used memory > 'maxmemory'")

    applier.fail = out_of_memory
    await produce(kafka, TRADES, [encode(trade(f"t{i}")) for i in range(4)], key=b"m1")
    async with transactional_service(kafka, database_url, migrations, applier) as (runtime, db):

        async def all_applied() -> None:
            assert await applied(db) == ["t0", "t1", "t2", "t3"]

        await eventually(all_applied)
        assert sample(runtime, "om_consumer_systemic_failures_total", consumer="svc", error="ResponseError") == 3
        assert sample(runtime, "om_consumer_dead_letters_total", consumer="svc", topic=TRADES, cause="apply") == 0
    assert sum((await end_offsets(kafka, DEAD_LETTERS.name)).values()) == 0


async def test_a_batch_rolled_back_by_a_deadlock_is_retried_at_once_without_a_pause(
    kafka: str, database_url: str, migrations: Path
) -> None:
    applier = Applier()
    conflicts = {"left": 2}

    def deadlock(event: TradeExecuted) -> None:
        if conflicts["left"] > 0:
            conflicts["left"] -= 1
            raise psycopg.errors.DeadlockDetected("deadlock detected")

    applier.fail = deadlock
    await produce(kafka, TRADES, [encode(trade(f"t{i}")) for i in range(4)], key=b"m1")
    async with transactional_service(kafka, database_url, migrations, applier) as (runtime, db):

        async def all_applied() -> None:
            assert await applied(db) == ["t0", "t1", "t2", "t3"]

        await eventually(all_applied)
        # Not counted as a systemic failure, so no backoff pause: the batch ran again at once.
        assert sample(runtime, "om_consumer_systemic_failures_total", consumer="svc", error="DeadlockDetected") == 0
        assert sample(runtime, "om_consumer_dead_letters_total", consumer="svc", topic=TRADES, cause="apply") == 0


async def test_most_of_a_batch_failing_alone_the_same_way_is_systemic(
    kafka: str, database_url: str, migrations: Path
) -> None:
    applier = Applier()

    def bug(event: TradeExecuted) -> None:
        raise KeyError(f"no settings for market {event.market_id}")  # a bug: every event fails, none is at fault

    applier.fail = bug
    await produce(kafka, TRADES, [encode(trade(f"t{i}")) for i in range(6)], key=b"m1")
    async with transactional_service(kafka, database_url, migrations, applier) as (runtime, db):

        async def stopped() -> None:
            assert sample(runtime, "om_consumer_systemic_failures_total", consumer="svc", error="KeyError") >= 1

        await eventually(stopped)
        applier.fail = None  # the fix is deployed

        async def all_applied() -> None:
            assert await applied(db) == [f"t{i}" for i in range(6)]

        await eventually(all_applied, timeout_s=30)
    assert sum((await end_offsets(kafka, DEAD_LETTERS.name)).values()) == 0


class Checkpoints:
    """A stateful consumer's listener: resumes at offsets it was given, records what it is told."""

    def __init__(self, resume: Mapping[tuple[str, int], int]) -> None:
        self.resume = dict(resume)
        self.assigned: list[list[tuple[str, int]]] = []
        self.revoked: list[list[tuple[str, int]]] = []
        self.regressions: list[tuple[tuple[str, int], int, int]] = []

    async def on_assigned(self, partitions: list[tuple[str, int]]) -> Mapping[tuple[str, int], int]:
        self.assigned.append(sorted(partitions))
        return {p: o for p, o in self.resume.items() if p in partitions}

    async def on_revoked(self, partitions: list[tuple[str, int]]) -> None:
        self.revoked.append(sorted(partitions))

    async def on_offset_regression(self, partition: tuple[str, int], stored: int, log_end: int) -> None:
        self.regressions.append((partition, stored, log_end))


async def test_a_stateful_consumer_resumes_where_its_listener_says_and_hears_of_a_lost_log(
    kafka: str,
) -> None:
    trades = [trade(f"t{i}") for i in range(5)]
    await produce(kafka, TRADES, [encode(t) for t in trades], key=b"m1")
    [partition] = [p for p, end in (await end_offsets(kafka, TRADES)).items() if end == 5]
    empty = next(p for p in range(MARKET_TRADES.partitions) if p != partition)
    # resume the busy partition at offset 2; claim offset 7 on an empty one: beyond its end, as after a lost log
    listener = Checkpoints({(TRADES, partition): 2, (TRADES, empty): 7})
    received: list[Delivery] = []

    async def process(deliveries: list[Delivery]) -> None:
        received.extend(deliveries)

    runtime = ServiceRuntime(settings(kafka))
    runtime.consume_stateful(process, topics=(MARKET_TRADES,), listener=listener)
    async with runtime.running():

        async def three_received() -> None:
            assert [d.event.trade_id for d in received] == ["t2", "t3", "t4"]

        await eventually(three_received)
        await produce(kafka, TRADES, [encode(trade("t5", market="m2"))], key=str(uuid.uuid4()).encode())

        async def four_received() -> None:
            assert len(received) == 4

        await eventually(four_received)
    assert listener.assigned == [[(TRADES, p) for p in range(MARKET_TRADES.partitions)]]
    assert listener.revoked[-1:] == [[(TRADES, p) for p in range(MARKET_TRADES.partitions)]]
    assert listener.regressions == [((TRADES, empty), 7, 0)]
    first = received[0]
    assert (first.topic, first.partition, first.offset) == (MARKET_TRADES, partition, 2)
    assert first.event == trades[2] and first.timestamp.tzinfo is not None
    assert sample(runtime, "om_consumer_offset_regressions_total", consumer="svc", topic=TRADES) == 1


async def test_a_pipelined_consumer_decodes_ahead_but_applies_batches_one_at_a_time_in_order_once(
    kafka: str,
) -> None:
    trades = [trade(f"t{i:03d}") for i in range(120)]
    await produce(kafka, TRADES, [encode(t) for t in trades], key=b"m1")
    applying = False
    applied_ids: list[str] = []
    batches = 0
    decoded_while_applying = 0

    async def process(deliveries: list[Delivery]) -> None:
        nonlocal applying, batches
        assert not applying, "two batches applied at once"
        applying = True
        try:
            batches += 1
            await asyncio.sleep(0.02)  # a transaction waiting on its database
            if batches == 2:
                raise ConnectionError("the database went away")  # systemic: the same batch comes again, in order
            applied_ids.extend(d.event.trade_id for d in deliveries)
        finally:
            applying = False

    runtime = ServiceRuntime(settings(kafka))
    runtime.consume_stateful(process, topics=(MARKET_TRADES,), listener=Checkpoints({}), max_records=10, pipelined=True)
    [consumer] = runtime.consumers
    decode = consumer._decode

    async def watched_decode(records: list[Any]) -> list[Delivery]:
        nonlocal decoded_while_applying
        decoded_while_applying += applying
        return await decode(records)

    consumer._decode = watched_decode  # type: ignore[method-assign]
    async with runtime.running():

        async def all_applied() -> None:
            assert len(applied_ids) >= len(trades)

        await eventually(all_applied)
    assert applied_ids == [t.trade_id for t in trades]  # each once, in order, the failed batch included
    assert decoded_while_applying > 0  # the next batch was decoded while one was being applied
    assert sample(runtime, "om_consumer_systemic_failures_total", consumer="svc", error="ConnectionError") == 1


async def test_a_service_that_does_not_require_kafka_starts_ready_and_connects_later(tmp_path: Path) -> None:
    port = free_port()
    runtime = ServiceRuntime(settings(f"127.0.0.1:{port}"), kafka_required=False)
    received: list[Delivery] = []

    async def process(deliveries: list[Delivery]) -> None:
        received.extend(deliveries)

    runtime.consume_stateful(process, topics=(MARKET_TRADES,), listener=Checkpoints({}))
    kafka = EmbeddedKafka("kafka", port, tmp_path / "kafka")
    try:
        async with app_client(runtime.create_app(title="svc")) as client:
            reply = await client.get("/ready")
            assert reply.status_code == 200
            assert reply.json()["checks"]["kafka"].startswith("failed")
            kafka.start()
            await asyncio.wait_for(runtime.kafka_started.wait(), timeout=30)
            await produce(kafka.url, TRADES, [encode(trade("late"))], key=b"m1")

            async def received_late() -> None:
                assert [d.event.trade_id for d in received] == ["late"]

            await eventually(received_late, timeout_s=30)
            assert (await client.get("/ready")).json()["checks"]["kafka"] == "ok"
    finally:
        kafka.stop()


async def test_partitions_handed_over_when_a_member_joins_are_read_from_where_the_listener_says(kafka: str) -> None:
    """A rebalance while the consumer waits in getmany re-positions its partitions, and the same getmany returns the
    new positions' records: they must be applied, not judged stale (they used to be dropped, and aiokafka had already
    moved past them, so the partitions the first member kept were never read again)."""
    trades = [trade(f"t{i}", market=f"m{i}") for i in range(12)]
    for t in trades:
        await produce(kafka, TRADES, [encode(t)], key=t.market_id.encode())
    assert sum(1 for end in (await end_offsets(kafka, TRADES)).values() if end) >= 2  # spread over partitions
    first: list[Delivery] = []
    second: list[Delivery] = []

    async def first_process(deliveries: list[Delivery]) -> None:
        first.extend(deliveries)

    async def second_process(deliveries: list[Delivery]) -> None:
        second.extend(deliveries)

    # Both listeners resume every partition from its beginning, so each member must read again all it is handed.
    one, two = Checkpoints({}), Checkpoints({})
    runtime_one, runtime_two = ServiceRuntime(settings(kafka)), ServiceRuntime(settings(kafka))
    runtime_one.consume_stateful(first_process, topics=(MARKET_TRADES,), listener=one)
    runtime_two.consume_stateful(second_process, topics=(MARKET_TRADES,), listener=two)
    everything = sorted(t.trade_id for t in trades)
    async with runtime_one.running():

        async def all_read_once() -> None:
            assert sorted(d.event.trade_id for d in first) == everything

        await eventually(all_read_once)
        before = len(first)
        partition_of = {d.event.trade_id: d.partition for d in first}
        async with runtime_two.running():

            async def handed_over() -> None:
                assert len(one.assigned) >= 2 and two.assigned
                kept, taken = set(one.assigned[-1]), set(two.assigned[-1])
                assert kept and taken and kept | taken == {(TRADES, p) for p in range(MARKET_TRADES.partitions)}
                assert {d.event.trade_id for d in first[before:]} >= {
                    t for t, p in partition_of.items() if (TRADES, p) in kept
                }
                assert {d.event.trade_id for d in second} == {
                    t for t, p in partition_of.items() if (TRADES, p) in taken
                }

            await eventually(handed_over, timeout_s=60)


async def test_a_broker_that_restarts_empty_under_a_running_consumer_is_read_again_from_its_start(
    tmp_path: Path,
) -> None:
    """The embedded broker answers a fetch beyond its (new, shorter) log with nothing: without looking at the high
    watermark the consumer would wait at its old position and skip the first events of the new log."""
    kafka = EmbeddedKafka("kafka", free_port(), tmp_path / "kafka")
    kafka.start()
    try:
        await ensure_topics(kafka.url, [MARKET_TRADES])
        await produce(kafka.url, TRADES, [encode(trade(f"old{i}")) for i in range(6)], key=b"m1")
        listener = Checkpoints({})
        received: list[str] = []

        async def process(deliveries: list[Delivery]) -> None:
            received.extend(d.event.trade_id for d in deliveries)
            for d in deliveries:  # checkpoint: the group rejoins the restarted broker and resumes from these
                listener.resume[(TRADES, d.partition)] = d.offset + 1

        runtime = ServiceRuntime(settings(kafka.url))
        runtime.consume_stateful(process, topics=(MARKET_TRADES,), listener=listener)
        async with runtime.running():

            async def old_received() -> None:
                assert received == [f"old{i}" for i in range(6)]

            await eventually(old_received)
            kafka.stop()
            kafka.start()  # empty: the in-memory log is gone
            await ensure_topics(kafka.url, [MARKET_TRADES])
            await asyncio.sleep(2.0)  # the consumer reconnects and fetches at its old position (6) meanwhile
            await produce(kafka.url, TRADES, [encode(trade(f"new{i}")) for i in range(3)], key=b"m1")

            async def new_received() -> None:
                assert received[6:] == ["new0", "new1", "new2"]

            await eventually(new_received, timeout_s=60)
        # The consumer may notice before or after the new events land (and the group may rejoin at the old
        # checkpoint after noticing, which is noticed again): each time, the old position is beyond the new end.
        assert listener.regressions
        assert all(stored == 6 and end < 6 for _, stored, end in listener.regressions)
    finally:
        kafka.stop()


async def partition_counts(bootstrap: str) -> dict[str, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        return {topic: len(consumer.partitions_for_topic(topic) or ()) for topic in await consumer.topics()}
    finally:
        await consumer.stop()


async def test_a_broker_that_lost_its_log_gets_the_registrys_topics_back_with_their_partition_counts(
    tmp_path: Path,
) -> None:
    """A topic a client names first on the emptied embedded broker is auto-created with the broker's default
    count (4 on Tansu), so once a consumer notices the lost log the runtime creates the registry's topics itself."""
    kafka = EmbeddedKafka("kafka", free_port(), tmp_path / "kafka")
    kafka.start()
    try:
        listener = Checkpoints({})

        async def process(deliveries: list[Delivery]) -> None:
            for d in deliveries:
                listener.resume[(TRADES, d.partition)] = d.offset + 1

        runtime = ServiceRuntime(settings(kafka.url))
        runtime.consume_stateful(process, topics=(MARKET_TRADES,), listener=listener)
        async with runtime.running():
            await produce(kafka.url, TRADES, [encode(trade(f"old{i}")) for i in range(6)], key=b"m1")

            async def checkpointed() -> None:
                assert sum(listener.resume.values()) == 6

            await eventually(checkpointed)
            kafka.stop()
            kafka.start()  # empty: no topics at all
            assert set(await partition_counts(kafka.url)) <= {TRADES}

            async def provisioned_again() -> None:
                counts = await partition_counts(kafka.url)
                for topic in TOPICS:
                    if topic.name != TRADES:  # (the consumer itself may have named it first)
                        assert counts.get(topic.name) == topic.partitions, topic.name

            await eventually(provisioned_again, timeout_s=60)
        assert listener.regressions
    finally:
        kafka.stop()


async def test_a_broker_that_restarts_empty_and_refills_past_a_running_consumers_position_is_read_from_its_start(
    tmp_path: Path,
) -> None:
    """A log that refills beyond the consumer's position before its next fetch shows nothing odd in the high
    watermark: the consumer would resume mid-log and skip the new log's first events. The broker forgetting the
    offsets this process had it commit is what tells. The consumer is held inside a batch (its `process` waits)
    while the broker restarts and refills, so it cannot fetch the empty log in between."""
    kafka = EmbeddedKafka("kafka", free_port(), tmp_path / "kafka")
    kafka.start()
    try:
        await ensure_topics(kafka.url, [MARKET_TRADES])
        await produce(kafka.url, TRADES, [encode(trade(f"old{i}")) for i in range(3)], key=b"m1")
        [partition] = [p for p, end in (await end_offsets(kafka.url, TRADES)).items() if end == 3]
        listener = Checkpoints({})
        received: list[str] = []
        held, release = asyncio.Event(), asyncio.Event()

        async def process(deliveries: list[Delivery]) -> None:
            if any(d.event.trade_id == "gate" for d in deliveries):
                held.set()
                await release.wait()
            received.extend(d.event.trade_id for d in deliveries)
            for d in deliveries:
                listener.resume[(d.topic.name, d.partition)] = d.offset + 1

        runtime = ServiceRuntime(settings(kafka.url))
        runtime.consume_stateful(process, topics=(MARKET_TRADES,), listener=listener)
        async with runtime.running():

            async def old_received_and_committed() -> None:
                assert received == ["old0", "old1", "old2"]
                # Kafka's copy of the offsets (committed in the background, for lag reports) is in place.
                probe = AIOKafkaConsumer(bootstrap_servers=kafka.url, group_id="svc", enable_auto_commit=False)
                try:
                    await probe.start()
                    assert await probe.committed(TopicPartition(TRADES, partition)) == 3
                finally:
                    await probe.stop()

            await eventually(old_received_and_committed)
            await produce_to(kafka.url, partition, [encode(trade("gate"))])
            await asyncio.wait_for(held.wait(), timeout=30)
            kafka.stop()
            kafka.start()  # empty, and refilled at once beyond the consumer's position (4, after the gate)
            await ensure_topics(kafka.url, [MARKET_TRADES])
            new = [f"new{i}" for i in range(8)]
            await produce_to(kafka.url, partition, [encode(trade(t)) for t in new])
            release.set()

            async def all_new_received() -> None:
                assert set(received[4:]) == set(new)  # (some twice: the service's event-id dedupe handles that)

            await eventually(all_new_received, timeout_s=60)
        assert listener.regressions and all(stored == 4 for _, stored, _ in listener.regressions)
    finally:
        kafka.stop()


async def produce_to(bootstrap: str, partition: int, values: list[bytes]) -> None:
    """Publish to one partition of the trades topic, whatever its partition count (a broker restarted empty may
    have re-created it with its own default count)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(TRADES, value, key=b"m1", partition=partition)
    finally:
        await producer.stop()
