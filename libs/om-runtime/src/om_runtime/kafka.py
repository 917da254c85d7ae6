"""Kafka: the broker factory, topic provisioning, publishing events, and consumers that never stop on bad input.

A consumer takes messages in batches and decodes each against its topic's contract. Bytes that are not a valid
event go to the dead-letter topic with the reason and the original bytes, and the consumer carries on. When the
infrastructure fails (a connection, a timeout) the batch is not committed and comes back, however often: nothing
is lost, and handlers are idempotent. When an event itself cannot be applied, it is found by applying the batch
one event at a time, and dead-lettered with the error, so it never blocks the events behind it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from aiokafka import AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage
from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from faststream.message import StreamMessage
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from om_contracts import DeadLetter, DecodeError, Topic, decode, encode, key_of, utcnow
from om_contracts.topics import DEAD_LETTERS, TOPICS

log = logging.getLogger(__name__)
_propagator = TraceContextTextMapPropagator()

Handler = Callable[[Any], Awaitable[None]]
#: Receives a batch's valid events, in arrival order, each with the topic it came from.
BatchHandler = Callable[[list[tuple[Topic, Any]]], Awaitable[None]]


@dataclass(frozen=True)
class Delivery:
    """One decoded event as the consumer received it: where it came from and the record's timestamp."""

    topic: Topic
    event: Any
    partition: int
    offset: int
    timestamp: datetime
    #: The Kafka record (key, raw value, headers), for dead-lettering and tracing.
    record: Any = field(default=None, repr=False, compare=False)


# After a transient failure, wait before the message is redelivered instead of spinning on it.
RETRY_DELAY_S = 0.5


def create_broker(
    bootstrap_servers: str,
    *,
    client_id: str,
    tracer_provider: TracerProvider | None = None,
    registry: CollectorRegistry | None = None,
    linger_ms: int = 5,
    compression_type: Literal["gzip", "snappy", "lz4", "zstd"] | None = None,
) -> KafkaBroker:
    """A broker whose producer batches: publishes arriving within `linger_ms` share one request (a confirmed
    publish pays that much extra latency). `compression_type` ("lz4", "zstd", "gzip") pays off across a network,
    not on loopback; lz4/zstd need their Python packages installed."""
    middlewares: list[Any] = [KafkaTelemetryMiddleware(tracer_provider=tracer_provider)]
    if registry is not None:
        middlewares.append(KafkaPrometheusMiddleware(registry=registry, app_name=client_id))
    return KafkaBroker(
        bootstrap_servers,
        client_id=client_id,
        # Tansu rejects the idempotent producer; consumers dedupe on event_id instead.
        enable_idempotence=False,
        acks="all",
        linger_ms=linger_ms,
        compression_type=compression_type,
        middlewares=middlewares,
        logger=logging.getLogger(f"{client_id}.kafka"),
        graceful_timeout=10.0,
        log_level=logging.DEBUG,  # per-message "Received/Processed" lines are debug detail, not operations news
    )


async def ensure_topics(
    bootstrap_servers: str,
    topics: Iterable[Topic] = TOPICS,
    *,
    replication_factor: int = 1,
    partitions: int | None = None,
) -> list[str]:
    """Create the registry's topics that do not exist yet; return the names created.

    `partitions` (KAFKA_TOPIC_PARTITIONS) raises the partition count of new multi-partition topics, so a consumer
    group can spread over that many processes; single-partition topics (ordered snapshots) stay single. Existing
    topics are never changed (see docs/architecture.md, "Partitions", to grow them)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="om-provisioner")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t.name not in existing]
        if missing:
            configs = [
                NewTopic(
                    t.name,
                    max(t.partitions, partitions or 0) if t.partitions > 1 else 1,
                    replication_factor,
                    topic_configs={"retention.ms": str(t.retention_ms)},
                )
                for t in missing
            ]
            response = await admin.create_topics(configs)
            for name, code, message in _topic_errors(response):
                if code not in (0, 36):  # 36: created meanwhile by another process
                    raise RuntimeError(f"cannot create topic {name}: {message} (error {code})")
        return [t.name for t in missing]
    finally:
        await admin.close()


def _topic_errors(response: Any) -> list[tuple[str, int, str | None]]:
    return [(e[0], e[1], e[2] if len(e) > 2 else None) for e in response.topic_errors]


_DEAD_LETTERS = uuid.UUID("1b0e4a52-8f0e-4a0c-9d7c-3f5e2b6a7c11")

# Delivery confirmations still to wait for, inside EventPublisher.confirmed_together().
_unconfirmed: ContextVar[list[asyncio.Future[Any]] | None] = ContextVar("unconfirmed", default=None)


class EventPublisher:
    """Publishes contract events keyed as the registry says."""

    def __init__(self, broker: KafkaBroker) -> None:
        self.broker = broker

    async def publish(self, topic: Topic, event: BaseModel, headers: dict[str, str] | None = None) -> None:
        await self.publish_bytes(
            topic.name,
            encode(event),
            key=key_of(topic, event),
            # Every contract event is an om_contracts Envelope, which has event_type.
            headers={"content-type": "application/json", "event_type": event.event_type, **(headers or {})},  # type: ignore[attr-defined]
        )

    async def publish_bytes(self, topic: str, value: bytes, *, key: bytes, headers: dict[str, str]) -> None:
        pending = _unconfirmed.get()
        if (producer := self._raw_producer()) is not None:
            # The hot path: straight to aiokafka. FastStream's publish path opens a span per message (most of a
            # consumer's publishing cost in profiles); the caller's span (one per consumed batch) is propagated.
            carrier = dict(headers)
            _propagator.inject(carrier)
            future = await producer.send(topic, value, key=key, headers=[(k, v.encode()) for k, v in carrier.items()])
            if pending is not None:
                pending.append(future)
            else:
                await future
            return
        result = await self.broker.publish(value, topic, key=key, headers=headers, no_confirm=pending is not None)
        if pending is not None and result is not None:  # (FastStream's in-memory test broker returns None)
            pending.append(result)

    def _raw_producer(self) -> AIOKafkaProducer | None:
        """The started aiokafka producer under the broker, or None (not connected yet, or a test broker)."""
        broker: Any = self.broker  # FastStream's internals are not part of its typed API
        try:
            state = broker.config.broker_config.producer._producer
        except AttributeError:
            return None
        producer = getattr(state, "producer", None)
        return producer if isinstance(producer, AIOKafkaProducer) else None

    @contextlib.asynccontextmanager
    async def confirmed_together(self) -> AsyncIterator[None]:
        """Inside, publishing does not wait for each acknowledgement; leaving waits for all of them and raises
        if any failed. Messages keep their order, since each is queued before the next publish starts."""
        pending: list[asyncio.Future[Any]] = []
        token = _unconfirmed.set(pending)
        try:
            yield
            await asyncio.gather(*pending)
        finally:
            _unconfirmed.reset(token)

    async def dead_letter(self, consumer: str, record: ConsumerRecord, body: bytes, reason: str) -> None:
        key = record.key.decode(errors="replace") if record.key else None
        letter = DeadLetter(
            # The same message dead-lettered again (its batch was redelivered) gets the same id.
            event_id=uuid.uuid5(_DEAD_LETTERS, f"{consumer}:{record.topic}:{record.partition}:{record.offset}"),
            occurred_at=utcnow(),
            producer=consumer,
            consumer=consumer,
            original_topic=record.topic,
            original_partition=record.partition,
            original_offset=record.offset,
            original_key=key,
            reason=reason,
            payload_base64=base64.b64encode(body).decode(),
        )
        await self.publish(DEAD_LETTERS, letter)


async def _raw_bodies(msg: StreamMessage[Any]) -> list[bytes]:
    """Hand the batch over as the bytes that arrived; decoding is the contract's job, not the transport's."""
    # A batch subscriber's body is the list of the records' bodies; FastStream types it as one message's.
    return msg.body  # type: ignore[return-value]


def consume(
    broker: KafkaBroker,
    topics: Collection[Topic],
    process: BatchHandler,
    *,
    consumer: str,
    publisher: EventPublisher,
    fanout: bool = False,
    fetch_max_wait_ms: int = 10,
    max_records: int = 500,
) -> None:
    """Subscribe one Kafka consumer to `topics`; `process` receives each batch's valid events, in order.

    Normally the consumer group `consumer` shares the partitions, starts from the earliest offset and commits
    a batch only after `process` returned. With `fanout` there is no group: every process receives every new
    message (as each gateway replica must), and a missed live update is simply superseded by the next.
    One consumer for all topics, rather than one per topic, keeps the group to one member per process.
    """
    by_name = {topic.name: topic for topic in topics}

    @broker.subscriber(
        *by_name,
        batch=True,
        max_records=max_records,
        batch_timeout_ms=fetch_max_wait_ms,
        group_id=None if fanout else consumer,
        auto_offset_reset="latest" if fanout else "earliest",
        fetch_max_wait_ms=fetch_max_wait_ms,
        ack_policy=AckPolicy.ACK_FIRST if fanout else AckPolicy.NACK_ON_ERROR,
        decoder=_raw_bodies,
        title=f"{consumer}:{','.join(by_name)}",
    )
    async def on_batch(bodies: list[bytes], msg: KafkaMessage) -> None:
        valid: list[tuple[Topic, Any, ConsumerRecord, bytes]] = []
        for record, body in zip(msg.raw_message, bodies, strict=True):
            topic = by_name[record.topic]
            try:
                valid.append((topic, decode(topic, body), record, body))
            except DecodeError as exc:
                log.warning("dead-lettered a message from %s: %s", topic.name, exc.reason)
                await publisher.dead_letter(consumer, record, body, exc.reason)
        if not valid:
            return
        try:
            await process([(topic, event) for topic, event, _, _ in valid])
        except Exception as exc:
            if is_transient(exc):
                log.exception("handling %d event(s) failed; they will be redelivered", len(valid))
                await asyncio.sleep(RETRY_DELAY_S)
                raise
            # Not the infrastructure: some event cannot be applied. Apply them one by one (each in its own
            # transaction, already-applied ones are skipped as duplicates) and dead-letter those that fail.
            log.warning("a batch of %d failed (%r); isolating the event(s) at fault", len(valid), exc)
            for topic, event, record, body in valid:
                try:
                    await process([(topic, event)])
                except Exception as one:
                    if is_transient(one):
                        await asyncio.sleep(RETRY_DELAY_S)
                        raise
                    reason = f"{topic.name} event {event.event_id} could not be applied: {type(one).__name__}: {one}"
                    log.exception("dead-lettered: %s", reason)
                    await publisher.dead_letter(consumer, record, body, reason)


def is_transient(exc: BaseException) -> bool:
    """Whether an error says the infrastructure failed (retry, never drop) rather than the event is unusable;
    see `om_runtime.failures.is_systemic`."""
    from om_runtime.failures import is_systemic

    return is_systemic(exc)


def dispatch(handlers: Mapping[Topic, Handler]) -> BatchHandler:
    """A batch handler that calls each event's topic handler in turn (no shared transaction)."""

    async def process(events: list[tuple[Topic, Any]]) -> None:
        for topic, event in events:
            await handlers[topic](event)

    return process
