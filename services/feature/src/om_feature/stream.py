"""A stateful Kafka consume loop: the smallest hook feature needs until om_runtime's `consume_stateful` lands
(same shapes: `Delivery`, `process(list[Delivery])`, a listener with `on_assigned` / `on_revoked`).

The group's partitions are assigned by range, so partition p of every market topic lands in the same process (the
topics are all keyed by market_id with the same partition count). Offsets live with the state in PostgreSQL, not
in Kafka: on assignment the listener returns where to resume. A stored offset beyond the log's end means the broker
lost its log; the listener is told and the partition is read from the start. Undecodable messages and events the
engine rejects go to the dead-letter topic with the reason; a failing batch (PostgreSQL, Redis or Kafka down) is
not skipped: the owned partitions are reloaded from their last checkpoint and consumed again from there.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.partitioner import murmur2
from opentelemetry import trace

from om_contracts import DeadLetter, DecodeError, Topic, decode, utcnow
from om_contracts.topics import DEAD_LETTERS

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)
RETRY_DELAY_S = 1.0
_DEAD_LETTERS = uuid.UUID("1b0e4a52-8f0e-4a0c-9d7c-3f5e2b6a7c11")  # the runtime's namespace: same ids as its own


@dataclass(frozen=True, slots=True)
class Delivery:
    topic: Topic
    event: Any
    partition: int
    offset: int
    timestamp: int
    key: bytes | None = None
    value: bytes | None = None  # the original bytes, for a dead letter (also of an event held for a while)

    def __reduce__(self) -> tuple[Any, ...]:  # held events are pickled into checkpoints: keep the topic by name
        fields = (self.topic.name, self.event, self.partition, self.offset, self.timestamp, self.key, self.value)
        return (_delivery, fields)


def _delivery(
    name: str, event: Any, partition: int, offset: int, timestamp: int, key: bytes | None, value: bytes | None
) -> Delivery:
    from om_contracts.topics import topic

    return Delivery(topic(name), event, partition, offset, timestamp, key, value)


class StatefulListener(Protocol):
    async def on_assigned(self, partitions: list[tuple[str, int]]) -> Mapping[tuple[str, int], int]: ...
    async def on_revoked(self, partitions: list[tuple[str, int]]) -> None: ...
    def on_offset_regression(self, partitions: list[tuple[str, int]]) -> None: ...


_HEADERS = [("content-type", b"application/json"), ("event_type", b"feature.vector_computed")]


class KafkaSink:
    """Vectors and dead letters out through one aiokafka producer; sends are batched (linger) and confirmed on
    `flush`, which every checkpoint calls before it saves offsets."""

    def __init__(self, bootstrap_servers: str, *, client_id: str, topic: str) -> None:
        self.topic = topic
        self.bootstrap_servers = bootstrap_servers
        self.client_id = client_id
        self.producer: AIOKafkaProducer | None = None
        self._pending: list[asyncio.Future[Any]] = []

    async def start(self) -> None:
        self.producer = AIOKafkaProducer(  # (aiokafka objects belong to the running event loop)
            bootstrap_servers=self.bootstrap_servers,
            client_id=self.client_id,
            enable_idempotence=False,  # Tansu rejects it; downstream dedupes on event_id
            acks="all",
            linger_ms=5,
            max_batch_size=512 * 1024,
        )
        await self.producer.start()

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()

    async def send(self, messages: list[tuple[bytes, bytes]]) -> None:
        """Queue messages in per-partition batches (far cheaper than one `send` per message), keyed as a plain
        producer would (murmur2 of the key), so each market's vectors stay in order on one partition."""
        assert self.producer is not None, "start() first"
        partitions = sorted(await self.producer.partitions_for(self.topic))
        batches: dict[int, Any] = {}
        for key, value in messages:
            partition = partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
            batch = batches.get(partition)
            if batch is None:
                batch = batches[partition] = self.producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None, headers=_HEADERS) is None:  # full: send it
                self._pending.append(await self.producer.send_batch(batch, self.topic, partition=partition))
                batch = batches[partition] = self.producer.create_batch()
                batch.append(key=key, value=value, timestamp=None, headers=_HEADERS)
        for partition, batch in batches.items():
            self._pending.append(await self.producer.send_batch(batch, self.topic, partition=partition))
        if len(self._pending) > 1_000:
            await self.flush()

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending:
            await asyncio.gather(*pending)

    async def dead_letter(
        self, consumer: str, topic: str, partition: int, offset: int, key: bytes | None, body: bytes, reason: str
    ) -> None:
        letter = DeadLetter(
            event_id=uuid.uuid5(_DEAD_LETTERS, f"{consumer}:{topic}:{partition}:{offset}"),
            occurred_at=utcnow(),
            producer=consumer,
            consumer=consumer,
            original_topic=topic,
            original_partition=partition,
            original_offset=offset,
            original_key=key.decode(errors="replace") if key else None,
            reason=reason,
            payload_base64=base64.b64encode(body).decode(),
        )
        await self.producer.send_and_wait(DEAD_LETTERS.name, letter.model_dump_json().encode(), key=topic.encode())


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, loop: StatefulLoop) -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
        if revoked:
            await self.loop.listener.on_revoked([(tp.topic, tp.partition) for tp in revoked])

    async def on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
        if assigned:
            await self.loop.resume(list(assigned))


class StatefulLoop:
    def __init__(
        self,
        bootstrap_servers: str,
        topics: Collection[Topic],
        process: Callable[[list[Delivery]], Awaitable[list[tuple[Any, str]]]],
        listener: StatefulListener,
        sink: KafkaSink,
        *,
        group: str,
        fetch_max_wait_ms: int = 10,
        max_records: int = 5_000,
    ) -> None:
        self.by_name = {t.name: t for t in topics}
        self.process = process
        self.listener = listener
        self.sink = sink
        self.group = group
        self.max_records = max_records
        self.bootstrap_servers = bootstrap_servers
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.expected: dict[TopicPartition, int] = {}  # next offset each partition should deliver

    def _consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            group_id=self.group,
            client_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=self.fetch_max_wait_ms,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            partition_assignment_strategy=(RangePartitionAssignor,),
        )

    async def resume(self, assigned: list[TopicPartition]) -> None:
        """Seek each assigned partition to the checkpointed next offset (or the start)."""
        stored = await self.listener.on_assigned([(tp.topic, tp.partition) for tp in assigned])
        for tp in assigned:
            offset = stored.get((tp.topic, tp.partition))
            self.expected[tp] = offset or 0
            if offset is None:
                await self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, offset)

    def _regressions(self, batch: Mapping[TopicPartition, list[Any]]) -> list[tuple[str, int]]:
        """Partitions whose records start before the checkpointed next offset. A stored offset beyond the log's
        end makes the consumer reset to the earliest offset, so this is how a lost log shows. (Not ListOffsets:
        the embedded broker answers it with the last batch's base offset + 1, too low after batched produce.)"""
        regressed = []
        for tp, records in batch.items():
            if records and records[0].offset < self.expected.get(tp, 0):
                regressed.append((tp.topic, tp.partition))
            if records:
                self.expected[tp] = records[-1].offset + 1
        return regressed

    async def run(self) -> None:
        self.consumer = self._consumer()
        self.consumer.subscribe(list(self.by_name), listener=_Rebalance(self))
        await self.consumer.start()
        try:
            while True:
                batch = await self.consumer.getmany(timeout_ms=100, max_records=self.max_records)
                if batch:
                    await self._handle(batch)
        finally:
            # Checkpoint and let go of the partitions *before* leaving the group: once this member leaves, another
            # one may load them, and a later save from here would overwrite its newer checkpoint.
            owned = [(tp.topic, tp.partition) for tp in self.consumer.assignment()]
            try:
                if owned:
                    await self.listener.on_revoked(owned)
            except Exception:
                log.exception("could not checkpoint %s before leaving; they resume from the previous checkpoint", owned)
            await self.consumer.stop()

    async def _handle(self, batch: Mapping[TopicPartition, list[Any]]) -> None:
        if regressed := self._regressions(batch):
            log.warning("offsets went back on %s: the broker lost its log, events come again", regressed)
            self.listener.on_offset_regression(regressed)
        deliveries: list[Delivery] = []
        for tp, records in batch.items():
            topic = self.by_name[tp.topic]
            for r in records:
                try:
                    event = decode(topic, r.value)
                except DecodeError as exc:
                    log.warning("dead-lettered a message from %s: %s", tp.topic, exc.reason)
                    reason = exc.reason
                    await self.sink.dead_letter(self.group, tp.topic, tp.partition, r.offset, r.key, r.value, reason)
                    continue
                deliveries.append(Delivery(topic, event, tp.partition, r.offset, r.timestamp, r.key, r.value))
        if not deliveries:
            return
        try:
            with tracer.start_as_current_span("feature.process_batch") as span:
                span.set_attribute("messaging.batch.message_count", len(deliveries))
                # Shielded: a stop in the middle of a batch must not leave state applied without its offsets.
                rejected = await asyncio.shield(self.process(deliveries))
        except Exception:
            log.exception("a batch of %d failed; reloading the last checkpoint and consuming again", len(deliveries))
            await asyncio.sleep(RETRY_DELAY_S)
            assigned = list(self.consumer.assignment())
            if assigned:
                await self.resume(assigned)
            return
        for d, reason in rejected:
            body = d.value if d.value is not None else d.event.model_dump_json().encode()
            log.warning("dead-lettered: %s", reason)
            await self.sink.dead_letter(self.group, d.topic.name, d.partition, d.offset, d.key, body, reason)
