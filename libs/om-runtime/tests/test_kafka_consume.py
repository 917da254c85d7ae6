"""om_runtime.kafka without a broker: consumers decode each batch against the contract, dead-letter what does not
decode and carry on; dead letters are idempotent; `dispatch` keeps order; `confirmed_together` waits for every
confirmation. Consumers run on FastStream's in-memory TestKafkaBroker; the publisher's confirmations on a fake."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import ConsumerRecord
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage, TestKafkaBroker

from om_contracts import DeadLetter, MarketCreated, Topic, TradeExecuted, decode, encode
from om_contracts.topics import DEAD_LETTERS, MARKET_LIFECYCLE, MARKET_SIGNALS, MARKET_TRADES
from om_runtime import kafka
from om_runtime.kafka import EventPublisher, consume, create_broker, dispatch


def trade(market_id: str = "m1", *, trade_id: str = "t1", amount: float = 10.0) -> TradeExecuted:
    return TradeExecuted(
        occurred_at=datetime.now(UTC),
        producer="test",
        trade_id=trade_id,
        market_id=market_id,
        user_id="alice",
        outcome="YES",
        amount=amount,
        shares=amount / 0.6,
        price_before=0.5,
        price_after=0.6,
    )


def created(market_id: str = "m1") -> MarketCreated:
    now = datetime.now(UTC)
    return MarketCreated(
        occurred_at=now,
        producer="test",
        market_id=market_id,
        question="Will it?",
        category="testing",
        close_at=now + timedelta(days=1),
    )


@dataclass
class Harness:
    broker: KafkaBroker
    publisher: EventPublisher
    batches: list[list[tuple[Topic, Any]]] = field(default_factory=list)
    #: (key, raw value, headers) of each message published to the dead-letter topic
    dead: list[tuple[bytes, bytes, dict[str, str]]] = field(default_factory=list)

    def letters(self) -> list[DeadLetter]:
        return [decode(DEAD_LETTERS, value) for _, value, _ in self.dead]


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    broker = create_broker("localhost:9092", client_id="test")
    h = Harness(broker, EventPublisher(broker))

    async def process(events: list[tuple[Topic, Any]]) -> None:
        h.batches.append(events)

    consume(broker, [MARKET_TRADES, MARKET_LIFECYCLE], process, consumer="svc", publisher=h.publisher)

    @broker.subscriber(DEAD_LETTERS.name)
    async def on_dead_letter(body: Any, msg: KafkaMessage) -> None:
        h.dead.append((msg.raw_message.key, msg.body, dict(msg.headers)))

    async with TestKafkaBroker(broker):
        yield h


async def test_a_valid_event_reaches_process_decoded_with_its_topic(harness: Harness) -> None:
    event = trade()
    await harness.broker.publish(encode(event), MARKET_TRADES.name, key=b"m1")

    assert harness.batches == [[(MARKET_TRADES, event)]]
    (_, decoded) = harness.batches[0][0]
    assert isinstance(decoded, TradeExecuted)
    assert harness.dead == []


async def test_each_topic_decodes_to_its_own_model(harness: Harness) -> None:
    opened, first = created("m2"), trade("m2")
    await harness.publisher.publish(MARKET_LIFECYCLE, opened)
    await harness.publisher.publish(MARKET_TRADES, first)

    assert harness.batches == [[(MARKET_LIFECYCLE, opened)], [(MARKET_TRADES, first)]]
    assert isinstance(harness.batches[0][0][1], MarketCreated)  # the discriminated union picked the right model


async def test_undecodable_bytes_are_dead_lettered_not_processed(harness: Harness) -> None:
    garbage = b"not json at all \xff"
    await harness.broker.publish(garbage, MARKET_TRADES.name, key=b"m1")

    assert harness.batches == []
    [letter] = harness.letters()
    assert letter.consumer == "svc"
    assert letter.producer == "svc"
    assert letter.original_topic == MARKET_TRADES.name
    assert letter.original_key == "m1"
    assert letter.original_partition == 0 and letter.original_offset == 0
    assert letter.reason.startswith(f"invalid {MARKET_TRADES.name} event: <root>: Invalid JSON")
    assert base64.b64decode(letter.payload_base64) == garbage
    key, _, headers = harness.dead[0]
    assert key == MARKET_TRADES.name.encode()  # dead letters are keyed by the original topic
    assert headers["event_type"] == "platform.dead_letter"
    assert headers["content-type"] == "application/json"


async def test_schema_invalid_json_is_dead_lettered_with_the_bad_field(harness: Harness) -> None:
    payload = trade().model_dump(mode="json")
    payload["amount"] = -3
    raw = json.dumps(payload).encode()
    await harness.broker.publish(raw, MARKET_TRADES.name, key=b"m1")

    assert harness.batches == []
    [letter] = harness.letters()
    assert letter.consumer == "svc"
    assert letter.original_topic == MARKET_TRADES.name
    assert "amount: Input should be greater than 0" in letter.reason
    assert base64.b64decode(letter.payload_base64) == raw


async def test_a_missing_field_and_a_wrong_event_type_are_named(harness: Harness) -> None:
    payload = trade().model_dump(mode="json")
    del payload["market_id"]
    await harness.broker.publish(json.dumps(payload).encode(), MARKET_TRADES.name)
    lifecycle = created().model_dump(mode="json") | {"event_type": "market.exploded"}
    await harness.broker.publish(json.dumps(lifecycle).encode(), MARKET_LIFECYCLE.name)

    assert harness.batches == []
    missing, wrong_type = harness.letters()
    assert "market_id: Field required" in missing.reason
    assert missing.original_key is None  # the record had no key
    assert wrong_type.original_topic == MARKET_LIFECYCLE.name
    assert "market.exploded" in wrong_type.reason


async def test_a_tombstone_is_dead_lettered_with_an_empty_payload(harness: Harness) -> None:
    await harness.broker.publish(None, MARKET_TRADES.name, key=b"m1")

    assert harness.batches == []
    [letter] = harness.letters()
    assert letter.payload_base64 == ""
    assert letter.original_key == "m1"


async def test_a_batch_keeps_its_valid_events_in_order_and_dead_letters_the_rest(harness: Harness) -> None:
    first, second = trade(trade_id="t1"), trade(trade_id="t2")
    await harness.broker.publish_batch(encode(first), b"{}", encode(second), topic=MARKET_TRADES.name)

    assert harness.batches == [[(MARKET_TRADES, first), (MARKET_TRADES, second)]]
    [letter] = harness.letters()
    assert base64.b64decode(letter.payload_base64) == b"{}"
    assert "trade_id: Field required" in letter.reason


async def test_a_batch_with_no_valid_event_does_not_call_process(harness: Harness) -> None:
    await harness.broker.publish_batch(b"[]", b"", topic=MARKET_TRADES.name)

    assert harness.batches == []
    assert len(harness.dead) == 2


async def test_an_infrastructure_failure_is_raised_so_the_batch_is_redelivered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kafka, "RETRY_DELAY_S", 0.0)
    broker = create_broker("localhost:9092", client_id="test")
    calls: list[int] = []

    async def process(events: list[tuple[Topic, Any]]) -> None:
        calls.append(len(events))
        raise ConnectionError("database is down")

    consume(broker, [MARKET_TRADES], process, consumer="svc", publisher=EventPublisher(broker))
    async with TestKafkaBroker(broker):
        with pytest.raises(ConnectionError, match="database is down"):
            await broker.publish_batch(
                encode(trade(trade_id="a")), encode(trade(trade_id="b")), topic=MARKET_TRADES.name
            )
    assert calls == [2]  # not retried one by one: the whole batch comes back


async def test_an_event_that_cannot_be_applied_is_dead_lettered_and_the_rest_applied(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kafka, "RETRY_DELAY_S", 0.0)
    broker = create_broker("localhost:9092", client_id="test")
    calls: list[list[str]] = []
    dead: list[bytes] = []

    async def process(events: list[tuple[Topic, Any]]) -> None:
        calls.append([event.trade_id for _, event in events])
        if any(event.trade_id == "poison" for _, event in events):
            raise ValueError("price out of range")

    consume(broker, [MARKET_TRADES], process, consumer="svc", publisher=EventPublisher(broker))

    @broker.subscriber(DEAD_LETTERS.name)
    async def on_dead_letter(body: Any, msg: KafkaMessage) -> None:
        dead.append(msg.body)

    a, poison, c = trade(trade_id="a"), trade(trade_id="poison"), trade(trade_id="c")
    async with TestKafkaBroker(broker):
        await broker.publish_batch(encode(a), encode(poison), encode(c), topic=MARKET_TRADES.name)

    assert calls == [["a", "poison", "c"], ["a"], ["poison"], ["c"]]
    [letter] = [decode(DEAD_LETTERS, raw) for raw in dead]
    assert letter.consumer == "svc"
    assert letter.original_topic == MARKET_TRADES.name
    assert str(poison.event_id) in letter.reason
    assert "ValueError: price out of range" in letter.reason
    assert base64.b64decode(letter.payload_base64) == encode(poison)


async def test_an_infrastructure_failure_while_isolating_is_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kafka, "RETRY_DELAY_S", 0.0)
    broker = create_broker("localhost:9092", client_id="test")
    calls: list[int] = []

    async def process(events: list[tuple[Topic, Any]]) -> None:
        calls.append(len(events))
        raise ValueError("bad") if len(events) > 1 else TimeoutError("gone")

    consume(broker, [MARKET_TRADES], process, consumer="svc", publisher=EventPublisher(broker))
    async with TestKafkaBroker(broker):
        with pytest.raises(TimeoutError):
            await broker.publish_batch(
                encode(trade(trade_id="a")), encode(trade(trade_id="b")), topic=MARKET_TRADES.name
            )
    assert calls == [2, 1]


def test_infrastructure_errors_are_transient_and_others_are_not() -> None:
    import psycopg
    import redis.exceptions
    from aiokafka.errors import KafkaConnectionError

    for exc in (
        ConnectionRefusedError(),
        TimeoutError(),
        OSError("network unreachable"),
        KafkaConnectionError(),
        psycopg.OperationalError("server closed the connection"),
        redis.exceptions.ConnectionError(),
        redis.exceptions.TimeoutError(),
    ):
        assert kafka.is_transient(exc), exc
    for exc in (ValueError(), KeyError("m1"), RuntimeError(), psycopg.errors.UniqueViolation()):
        assert not kafka.is_transient(exc), exc


def test_the_consumer_is_one_group_from_the_earliest_offset_unless_fanout() -> None:
    publisher = EventPublisher(broker := create_broker("localhost:9092", client_id="test"))

    async def process(events: list[tuple[Topic, Any]]) -> None: ...

    consume(broker, [MARKET_TRADES, MARKET_SIGNALS], process, consumer="svc", publisher=publisher)
    consume(broker, [MARKET_LIFECYCLE], process, consumer="gw", publisher=publisher, fanout=True, max_records=7)
    by_topics = {frozenset(t.name for t in s.topics): s for s in broker.subscribers}
    grouped = by_topics[frozenset({MARKET_TRADES.name, MARKET_SIGNALS.name})]
    fanned = by_topics[frozenset({MARKET_LIFECYCLE.name})]
    assert grouped.group_id == "svc"
    assert grouped.ack_policy == AckPolicy.NACK_ON_ERROR
    assert grouped.max_records == 500
    assert fanned.group_id is None
    assert fanned.ack_policy == AckPolicy.ACK_FIRST
    assert fanned.max_records == 7


# --- dead letters -----------------------------------------------------------------------------------


class RecordingBroker:
    """Stands in for KafkaBroker.publish: records each call; confirms at once, or hands out futures it keeps."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.futures: list[asyncio.Future[str]] = []

    async def publish(self, value: bytes, topic: str, **kwargs: Any) -> Any:
        self.calls.append({"value": value, "topic": topic, **kwargs})
        if kwargs.get("no_confirm"):
            future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            self.futures.append(future)
            return future
        return "metadata"


def record(topic: str = MARKET_TRADES.name, partition: int = 1, offset: int = 42, key: bytes | None = b"m1") -> Any:
    return ConsumerRecord(
        topic=topic,
        partition=partition,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=key,
        value=b"junk",
        checksum=None,
        serialized_key_size=-1,
        serialized_value_size=4,
        headers=(),
    )


async def test_the_same_record_dead_lettered_twice_gets_the_same_event_id() -> None:
    fake = RecordingBroker()
    publisher = EventPublisher(fake)  # type: ignore[arg-type]

    await publisher.dead_letter("svc", record(), b"junk", "bad")
    await publisher.dead_letter("svc", record(), b"junk", "bad again")  # the batch came back
    await publisher.dead_letter("svc", record(offset=43), b"junk", "bad")
    await publisher.dead_letter("svc", record(partition=2), b"junk", "bad")
    await publisher.dead_letter("other", record(), b"junk", "bad")

    letters = [decode(DEAD_LETTERS, call["value"]) for call in fake.calls]
    ids = [letter.event_id for letter in letters]
    assert ids[0] == ids[1]
    assert isinstance(ids[0], uuid.UUID) and ids[0].version == 5
    assert len(set(ids)) == 4  # another offset, partition or consumer is another message
    first = letters[0]
    assert (first.original_topic, first.original_partition, first.original_offset) == (MARKET_TRADES.name, 1, 42)
    assert first.original_key == "m1"
    assert base64.b64decode(first.payload_base64) == b"junk"
    assert all(call["topic"] == DEAD_LETTERS.name for call in fake.calls)
    assert all(call["key"] == MARKET_TRADES.name.encode() for call in fake.calls)


async def test_a_dead_letter_of_a_keyless_record_has_no_key() -> None:
    fake = RecordingBroker()
    await EventPublisher(fake).dead_letter("svc", record(key=None), b"", "empty")  # type: ignore[arg-type]

    assert decode(DEAD_LETTERS, fake.calls[0]["value"]).original_key is None


async def test_publish_encodes_keys_and_labels_the_event() -> None:
    fake = RecordingBroker()
    event = trade("m9")
    await EventPublisher(fake).publish(MARKET_TRADES, event, headers={"x-trace": "1"})  # type: ignore[arg-type]

    [call] = fake.calls
    assert call["topic"] == MARKET_TRADES.name
    assert call["value"] == encode(event)
    assert call["key"] == b"m9"
    assert call["headers"] == {"content-type": "application/json", "event_type": "trade.executed", "x-trace": "1"}
    assert call["no_confirm"] is False


# --- dispatch ---------------------------------------------------------------------------------------


async def test_dispatch_calls_each_events_topic_handler_in_order() -> None:
    seen: list[tuple[str, Any]] = []

    async def on_trade(event: Any) -> None:
        seen.append(("trade", event))

    async def on_lifecycle(event: Any) -> None:
        await asyncio.sleep(0)  # a slower handler still keeps the order
        seen.append(("lifecycle", event))

    process = dispatch({MARKET_TRADES: on_trade, MARKET_LIFECYCLE: on_lifecycle})
    a, b, c = trade(trade_id="a"), created(), trade(trade_id="c")
    await process([(MARKET_TRADES, a), (MARKET_LIFECYCLE, b), (MARKET_TRADES, c)])

    assert seen == [("trade", a), ("lifecycle", b), ("trade", c)]


async def test_dispatch_stops_at_a_failing_handler() -> None:
    seen: list[Any] = []

    async def on_trade(event: TradeExecuted) -> None:
        if event.trade_id == "bad":
            raise ValueError("nope")
        seen.append(event.trade_id)

    process = dispatch({MARKET_TRADES: on_trade})
    with pytest.raises(ValueError, match="nope"):
        await process([(MARKET_TRADES, trade(trade_id=t)) for t in ("a", "bad", "c")])
    assert seen == ["a"]


# --- confirmed_together -----------------------------------------------------------------------------


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_confirmed_together_waits_for_every_confirmation() -> None:
    fake = RecordingBroker()
    publisher = EventPublisher(fake)  # type: ignore[arg-type]

    async def publish_two() -> None:
        async with publisher.confirmed_together():
            await publisher.publish(MARKET_TRADES, trade(trade_id="a"))
            await publisher.publish(MARKET_TRADES, trade(trade_id="b"))

    task = asyncio.create_task(publish_two())
    await _settle()
    assert [call["no_confirm"] for call in fake.calls] == [True, True]  # both sent without waiting
    assert not task.done()

    fake.futures[1].set_result("ok")
    await _settle()
    assert not task.done()  # still waiting for the first

    fake.futures[0].set_result("ok")
    await asyncio.wait_for(task, 1.0)

    await publisher.publish(MARKET_TRADES, trade(trade_id="c"))  # outside, each publish waits again
    assert fake.calls[-1]["no_confirm"] is False


async def test_confirmed_together_raises_when_a_confirmation_fails() -> None:
    fake = RecordingBroker()
    publisher = EventPublisher(fake)  # type: ignore[arg-type]

    async def publish_two() -> None:
        async with publisher.confirmed_together():
            await publisher.publish(MARKET_TRADES, trade(trade_id="a"))
            await publisher.publish(MARKET_TRADES, trade(trade_id="b"))

    task = asyncio.create_task(publish_two())
    await _settle()
    fake.futures[0].set_result("ok")
    fake.futures[1].set_exception(ConnectionError("not enough replicas"))
    with pytest.raises(ConnectionError, match="not enough replicas"):
        await asyncio.wait_for(task, 1.0)

    await publisher.publish(MARKET_TRADES, trade(trade_id="c"))  # the context was reset
    assert fake.calls[-1]["no_confirm"] is False


async def test_confirmed_together_with_nothing_published_returns_at_once() -> None:
    publisher = EventPublisher(RecordingBroker())  # type: ignore[arg-type]
    async with publisher.confirmed_together():
        pass
