"""feature's stateful Kafka consume loop: the runtime's group consumer (`om_runtime.consumer`) has the same shape,
but feature applies a batch to in-memory state and returns what it rejected, and a failing batch reloads the
partitions' checkpoint instead of isolating events (in-memory state cannot be rolled back event by event).

The group's partitions are assigned by range, so partition p of every market topic lands in the same process (the
topics are all keyed by market_id with the same partition count). Offsets live with the state in PostgreSQL, not
in Kafka: on assignment the listener returns where to resume. A broker that lost its log is detected as the
runtime detects it (`log_end_regressions`: a position beyond the high watermark a fetch reported; the embedded
broker sends no out-of-range error and answers ListOffsets too low), or by an out-of-range error from a broker
that sends one: the listener is told and the partition is read again from the new log's start. Undecodable
messages and events the engine rejects go to the dead-letter topic with the reason; a failing batch (PostgreSQL,
Redis or Kafka down) is not skipped: the owned partitions are reloaded from their last checkpoint and consumed
again from there.
"""

from __future__ import annotations

import asyncio
import base64
import heapq
import logging
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import NoOffsetForPartitionError, OffsetOutOfRangeError
from aiokafka.partitioner import murmur2
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from om_contracts import DeadLetter, DecodeError, Topic, decode, utcnow
from om_contracts.topics import DEAD_LETTERS
from om_runtime.consumer import ConsumerMetrics, log_end_regressions, trace_links

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)
RETRY_DELAY_S = 1.0
_DEAD_LETTERS = uuid.UUID("1b0e4a52-8f0e-4a0c-9d7c-3f5e2b6a7c11")  # the runtime's namespace: same ids as its own


@dataclass(slots=True, eq=False)  # not frozen: one per consumed event, and a frozen __init__ costs 4-5 times more
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
    async def on_offset_regression(self, partition: tuple[str, int], stored: int, log_end: int, start: int) -> None: ...
    async def on_idle(self) -> None: ...


_HEADERS = [("content-type", b"application/json"), ("event_type", b"feature.vector_computed")]
_propagator = TraceContextTextMapPropagator()


def _headers() -> list[tuple[str, bytes]]:
    """The vector headers plus the current span's trace context (W3C traceparent), as the runtime's publish path
    adds it."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return _HEADERS + [(k, v.encode()) for k, v in carrier.items()]


class KafkaSink:
    """Vectors and dead letters out through one aiokafka producer; sends are batched (linger) and confirmed on
    `flush`, which every checkpoint calls before it saves offsets."""

    def __init__(self, bootstrap_servers: str, *, client_id: str, topic: str) -> None:
        self.topic = topic
        self.bootstrap_servers = bootstrap_servers
        self.client_id = client_id
        self.producer: AIOKafkaProducer | None = None
        self._pending: list[asyncio.Future[Any]] = []
        #: partition per message key for the topic's current partition count (aiokafka's murmur2 is pure Python
        #: and costs more than appending the record; a market's key comes back with every vector)
        self._partition_of: dict[bytes, int] = {}
        self._partitions: list[int] = []

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
        # One publish span per batch of vectors (a child of the consumed batch's span); its context goes in every
        # vector's headers, so the consumers' batch spans link back to it.
        with tracer.start_as_current_span(
            f"{self.topic} publish",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "kafka",
                "messaging.destination.name": self.topic,
                "messaging.batch.message_count": len(messages),
            },
        ):
            await self._send(messages, _headers())
        if len(self._pending) > 1_000:
            await self.flush()

    async def _send(self, messages: list[tuple[bytes, bytes]], headers: list[tuple[str, bytes]]) -> None:
        if self.producer is None:
            raise RuntimeError("start() the sink first")
        partitions = sorted(await self.producer.partitions_for(self.topic))
        partition_of = self._partition_of
        if partitions != self._partitions or len(partition_of) > 1_000_000:
            partition_of.clear()
            self._partitions = partitions
        batches: dict[int, Any] = {}
        for key, value in messages:
            partition = partition_of.get(key)
            if partition is None:
                partition = partition_of[key] = partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
            batch = batches.get(partition)
            if batch is None:
                batch = batches[partition] = self.producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:  # full: send it
                self._pending.append(await self.producer.send_batch(batch, self.topic, partition=partition))
                batch = batches[partition] = self.producer.create_batch()
                batch.append(key=key, value=value, timestamp=None, headers=headers)
        for partition, batch in batches.items():
            self._pending.append(await self.producer.send_batch(batch, self.topic, partition=partition))

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
        if self.producer is None:
            raise RuntimeError("start() the sink first")
        await self.producer.send_and_wait(DEAD_LETTERS.name, letter.model_dump_json().encode(), key=topic.encode())


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka ships no types: the base is Any
    def __init__(self, loop: StatefulLoop) -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
        await self.loop.revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
        await self.loop.assigned(list(assigned))


class StatefulLoop:
    """One consumer-group member feeding each fetched batch to `process` inside one span per batch.

    Positions come only from the listener: the consumer never resets a partition by itself (auto_offset_reset
    "none"), since a reset racing the assignment callback's seek used to hand over records from offset 0 whose
    offsets then overwrote the checkpointed ones. A batch fetched before the latest assignment is dropped (its
    partitions were re-positioned), and revocation waits for the batch in flight, so state, offsets and
    ownership always move together."""

    def __init__(
        self,
        bootstrap_servers: str,
        topics: Collection[Topic],
        process: Callable[[list[Delivery]], Awaitable[list[tuple[Any, str]]]],
        listener: StatefulListener,
        sink: KafkaSink,
        *,
        group: str,
        metrics: ConsumerMetrics | None = None,
        fetch_max_wait_ms: int = 10,
        max_records: int = 5_000,
    ) -> None:
        self.by_name = {t.name: t for t in topics}
        self.process = process
        self.listener = listener
        self.sink = sink
        self.group = group
        self.metrics = metrics if metrics is not None else ConsumerMetrics(None)
        self.max_records = max_records
        self.bootstrap_servers = bootstrap_servers
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self._lock = asyncio.Lock()  # held while a batch is applied; a revocation waits for it
        self._epoch = 0  # bumped by every assignment: a batch fetched before it is stale
        self._owned: set[TopicPartition] = set()  # positioned from the checkpoint and not revoked since
        #: the next offset each owned partition should deliver (set on seek, advanced per applied batch)
        self._expected: dict[TopicPartition, int] = {}
        self._consumer: AIOKafkaConsumer | None = None

    @property
    def consumer(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("the consume loop is not running")
        return self._consumer

    def _new_consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            group_id=self.group,
            client_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="none",  # positions come from the checkpoint; a lost log must not pass silently
            fetch_max_wait_ms=self.fetch_max_wait_ms,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            partition_assignment_strategy=(RangePartitionAssignor,),
        )

    # --- rebalancing -----------------------------------------------------------------------------------

    async def assigned(self, assigned: list[TopicPartition]) -> None:
        """Load the partitions' checkpoint and seek each to its saved next offset (or the log's start)."""
        self._epoch += 1
        if not assigned:
            return
        stored = await self.listener.on_assigned([(tp.topic, tp.partition) for tp in assigned])
        # Explicit offsets only: awaiting seek_to_beginning() here can wait on the fetcher, which waits on us.
        starts = await self.consumer.beginning_offsets(assigned)
        for tp in assigned:
            offset = stored.get((tp.topic, tp.partition))
            position = starts[tp] if offset is None else offset
            self.consumer.seek(tp, position)
            self._expected[tp] = position
        self._owned.update(assigned)

    async def revoked(self, revoked: list[TopicPartition]) -> None:
        async with self._lock:  # let the batch in flight finish (and its offsets be counted) first
            self._owned.difference_update(revoked)  # records of them fetched until the assignment are not ours
            for tp in revoked:
                self._expected.pop(tp, None)
            if revoked:
                await self.listener.on_revoked([(tp.topic, tp.partition) for tp in revoked])

    async def _out_of_range(self, positions: Mapping[TopicPartition, int]) -> None:
        """A checkpointed offset the broker does not have (a broker that answers out-of-range): beyond the log's
        start, the broker lost its log; before its start, retention removed the events."""
        tps = list(positions)
        starts = await self.consumer.beginning_offsets(tps)
        for tp in tps:
            if positions[tp] >= starts[tp]:
                await self._regressed(tp, positions[tp], starts[tp], starts[tp])
            else:
                log.error("offset %d of %s-%d is gone (retention); resuming at %d", positions[tp], *tp, starts[tp])
                self.consumer.seek(tp, starts[tp])
                self._expected[tp] = starts[tp]

    async def _check_log_ends(self) -> None:
        """The runtime's detection of a lost log: a position beyond the high watermark the last fetch reported."""
        found = log_end_regressions(self.consumer, {tp: o for tp, o in self._expected.items() if tp in self._owned})
        if not found:
            return
        starts = await self.consumer.beginning_offsets([tp for tp, _, _ in found])
        for tp, expected, high in found:
            await self._regressed(tp, expected, high, starts[tp])

    async def _regressed(self, tp: TopicPartition, stored: int, log_end: int, start: int) -> None:
        """Read the partition again from `start`; batches fetched before are stale; the listener dedupes."""
        self.metrics.regressions.labels(self.group, tp.topic).inc()
        self.consumer.seek(tp, start)
        self._expected[tp] = start
        self._epoch += 1
        await self.listener.on_offset_regression((tp.topic, tp.partition), stored, log_end, start)

    # --- the loop --------------------------------------------------------------------------------------

    async def run(self) -> None:
        self._consumer = self._new_consumer()
        self.consumer.subscribe(list(self.by_name), listener=_Rebalance(self))
        await self.consumer.start()
        try:
            while True:
                try:
                    batch = await self.consumer.getmany(timeout_ms=100, max_records=self.max_records)
                except OffsetOutOfRangeError as exc:
                    await self._out_of_range(exc.args[0] if exc.args else {})
                    continue
                except NoOffsetForPartitionError:
                    continue  # fetched before the assignment callback positioned the partition; it has been since
                # Records come from the positions current when getmany returns; if an assignment re-positions the
                # partitions before this batch gets the lock, it is stale (and will be fetched again from there).
                epoch = self._epoch
                async with self._lock:
                    if batch and epoch == self._epoch:
                        await self._handle(batch)
                        if epoch == self._epoch:  # (a failed batch reloaded the checkpoint and re-positioned)
                            for tp, records in batch.items():
                                if records and tp in self._expected:
                                    self._expected[tp] = records[-1].offset + 1
                    await self._check_log_ends()
                if not batch:
                    await self.listener.on_idle()  # a fetch came back empty: the stream is quiet
        finally:
            # Checkpoint and let go of the partitions *before* leaving the group: once this member leaves, another
            # one may load them, and a later save from here would overwrite its newer checkpoint.
            owned = list(self._owned)
            try:
                await self.revoked(owned)
            except Exception:
                log.exception("could not checkpoint %s before leaving; they resume from the previous checkpoint", owned)
            await self.consumer.stop()
            self._consumer = None

    async def _handle(self, batch: Mapping[TopicPartition, list[Any]]) -> None:
        owned = [rs for tp, rs in batch.items() if tp in self._owned and rs]
        records = [r for rs in owned for r in rs]
        if not records:
            return
        # One span per batch, linked to the trace of each event (up to the runtime's limit), as the runtime's
        # consumer does; vectors published inside it carry its context.
        with tracer.start_as_current_span(
            f"{self.group} process",
            kind=SpanKind.CONSUMER,
            links=trace_links(records),
            attributes={"messaging.system": "kafka", "messaging.batch.message_count": len(records)},
        ):
            per_partition: list[list[Delivery]] = []
            for rs in owned:
                deliveries: list[Delivery] = []
                per_partition.append(deliveries)
                for r in rs:
                    topic = self.by_name[r.topic]
                    try:
                        event = decode(topic, r.value)
                    except DecodeError as exc:
                        log.warning("dead-lettered a message from %s: %s", r.topic, exc.reason)
                        await self.sink.dead_letter(
                            self.group, r.topic, r.partition, r.offset, r.key, r.value, exc.reason
                        )
                        self.metrics.dead_letters.labels(self.group, r.topic, "decode").inc()
                        continue
                    deliveries.append(Delivery(topic, event, r.partition, r.offset, r.timestamp, r.key, r.value))
            # The topics' partitions interleaved by event time (each keeps its own order, so offsets only grow):
            # applied one topic after the other, a batch spanning more than the grace period of event time left
            # the second topic's events late for their markets (totals only: no windows, no sentiment, no snapshot).
            deliveries = list(heapq.merge(*per_partition, key=lambda d: d.event.occurred_at))
            if not deliveries:
                return
            try:
                # Shielded: a stop in the middle of a batch must not leave state applied without its offsets.
                rejected = await asyncio.shield(self.process(deliveries))
            except Exception:
                log.exception("a batch of %d failed; reloading the last checkpoint, consuming again", len(deliveries))
                await asyncio.sleep(RETRY_DELAY_S)
                await self.assigned(list(self.consumer.assignment()))
                return
            for d, reason in rejected:
                body = d.value if d.value is not None else d.event.model_dump_json().encode()
                log.warning("dead-lettered: %s", reason)
                await self.sink.dead_letter(self.group, d.topic.name, d.partition, d.offset, d.key, body, reason)
                self.metrics.dead_letters.labels(self.group, d.topic.name, "apply").inc()
        # Events applied and their latency from event time, once per topic and batch (the runtime's series).
        per_topic: dict[str, list[datetime]] = {}
        for d in deliveries:
            per_topic.setdefault(d.topic.name, []).append(d.event.occurred_at)
        now = datetime.now(UTC)
        for name, event_times in per_topic.items():
            self.metrics.applied(self.group, name, event_times, now)
