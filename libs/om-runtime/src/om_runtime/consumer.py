"""The group consumer behind `consume_in_transaction` and `consume_stateful`, on aiokafka directly.

Positions live with the service's state, not in Kafka: on assignment the listener says where each partition resumes
(offsets saved in the service's own transaction, or its checkpoint) and the consumer seeks there; before partitions
move away the listener may flush. Offsets are also committed to Kafka after each batch, for lag reporting only.

Failures are classified (see `om_runtime.failures`): undecodable bytes are dead-lettered at once; an infrastructure
error, or most of a batch failing alone the same way, stops the batch, backs off (metric + log line) and retries it,
however long that takes; only an event that fails alone, repeatedly, among neighbours that succeed is dead-lettered.
A position beyond the partition's log end (as the fetches' high watermark tells) means the broker lost its log: that
is logged, counted, told to the listener, and the partition is read again from its beginning (event-id dedupe keeps
that harmless).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import NoOffsetForPartitionError, OffsetOutOfRangeError
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CollectorRegistry, Counter, Gauge

from om_contracts import DecodeError, Topic, decode
from om_runtime.failures import Backoff, StreakGuard, is_retry_now, is_systemic, judge_isolated
from om_runtime.kafka import Delivery, EventPublisher
from om_runtime.metrics import ProcessingLatency
from om_runtime.offsets import Partition

log = logging.getLogger(__name__)

#: Applies deliveries and, in the same unit of work, records `offsets` (next offset per partition) as consumed.
DeliveryProcessor = Callable[[list[Delivery], Mapping[Partition, int]], Awaitable[None]]

#: Links from a batch's span to the traces of its events, at most (a span with thousands of links costs more
#: than it tells).
MAX_LINKS = 64

_tracer = trace.get_tracer("om_runtime.consumer")
_propagator = TraceContextTextMapPropagator()

#: Attempts at an event applied alone before it is judged poison.
POISON_ATTEMPTS = 3

#: Immediate retries of a batch whose transaction PostgreSQL rolled back on a conflict, before backing off.
RETRY_NOW_ATTEMPTS = 3

#: Records decoded between two yields to the event loop: a batch of 2,000 takes 10-20 ms of CPU to decode on a quiet
#: machine (several times that on a busy one), which held every other task of the service (its snapshot loop, its
#: HTTP requests) for as long; a third of the stalls `om_event_loop_lag_seconds` caught in analytics were here.
DECODE_SLICE = 250


class PartitionListener(Protocol):
    async def on_assigned(self, partitions: list[Partition]) -> Mapping[Partition, int]:
        """Return the next offset to read for each partition that has one (missing: from the earliest)."""
        ...

    async def on_revoked(self, partitions: list[Partition]) -> None:
        """Flush what must be saved before these partitions move to another process."""
        ...


class ConsumerMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        registry = registry if registry is not None else CollectorRegistry()
        labels = ("consumer", "topic")
        self.events = Counter("om_consumer_events", "Events applied", labels, registry=registry)
        self.dead_letters = Counter(
            "om_consumer_dead_letters", "Events dead-lettered", (*labels, "cause"), registry=registry
        )
        self.systemic = Counter(
            "om_consumer_systemic_failures",
            "Batches stopped by a systemic failure and retried after a pause",
            ("consumer", "error"),
            registry=registry,
        )
        self.regressions = Counter(
            "om_consumer_offset_regressions", "Stored offsets beyond the partition's log end", labels, registry=registry
        )
        self.lag = Gauge(
            "om_consumer_lag", "Messages behind the partition's end", (*labels, "partition"), registry=registry
        )
        self.backing_off = Gauge(
            "om_consumer_backing_off",
            "1 while the consumer pauses after a systemic failure",
            ("consumer",),
            registry=registry,
        )
        #: Event time → applied, per consumer and topic (om_runtime.metrics).
        self.latency = ProcessingLatency(registry)

    def applied(self, consumer: str, topic: str, event_times: list[datetime], now: datetime | None = None) -> None:
        """Count a batch's events applied from one topic and observe their latency from event time (for consumers
        with their own loop too, e.g. feature's)."""
        self.events.labels(consumer, topic).inc(len(event_times))
        self.latency.observe(consumer, topic, event_times, now)


class _Prepared(NamedTuple):
    batch: Mapping[TopicPartition, list[Any]]
    epoch: int
    records: list[Any]
    batch_end: dict[Partition, int]
    deliveries: list[Delivery]


class _Systemic(Exception):
    def __init__(self, cause: BaseException, reason: str) -> None:
        super().__init__(reason)
        self.cause = cause
        self.reason = reason


class GroupConsumer:
    """One consumer-group member reading `topics` and handing each fetched batch to `process`."""

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        topics: Collection[Topic],
        group: str,
        process: DeliveryProcessor,
        listener: PartitionListener,
        publisher: EventPublisher,
        metrics: ConsumerMetrics,
        fallback_to_committed: bool = False,
        fetch_max_wait_ms: int = 10,
        max_records: int = 500,
        pipelined: bool = False,
        on_log_lost: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        #: Decode the next batch while the previous one applies (for a processor that mostly waits on its database).
        self.pipelined = pipelined
        #: Called (in the background, one call at a time) when the broker is found to have lost its log: the
        #: runtime re-creates the registry's topics then, before a client's request re-creates them with the
        #: broker's default partition count.
        self.on_log_lost = on_log_lost
        self._reprovisioning: asyncio.Task[Any] | None = None
        self.by_name = {t.name: t for t in topics}
        self.group = group
        self.process = process
        self.listener = listener
        self.publisher = publisher
        self.metrics = metrics
        self.fallback_to_committed = fallback_to_committed
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.max_records = max_records
        self.backoff = Backoff()
        self.streak = StreakGuard()
        self._lock = asyncio.Lock()  # held while a batch is applied; revocation waits for it
        self._epoch = 0  # bumped by every assignment: deliveries fetched before it are stale
        self._consumer: AIOKafkaConsumer | None = None
        #: The next offset each assigned partition should deliver (set on seek, advanced per batch).
        self._expected: dict[TopicPartition, int] = {}
        self._committing: asyncio.Task[None] | None = None
        #: Partitions whose offsets Kafka confirmed committing for this group, in this process's lifetime.
        self._kafka_committed: set[TopicPartition] = set()
        self.started = asyncio.Event()
        self._stopping = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Consume until `stop()` (or cancellation). The broker may be down at first: connecting is retried."""
        consumer = await self._connect()
        graceful = False
        applying: asyncio.Task[None] | None = None  # the batch being applied while the next is decoded (pipelined)
        try:
            self.started.set()
            while not self._stopping.is_set():
                try:
                    batch = await consumer.getmany(
                        timeout_ms=max(self.fetch_max_wait_ms, 100), max_records=self.max_records
                    )
                    # Read the epoch only now, with no await since getmany returned. aiokafka hands out only records
                    # that start at each partition's current position, so a rebalance that re-positioned partitions
                    # while getmany waited (a member joining, the broker restarting) is already reflected in the
                    # batch, and its records are the new positions' own. Reading the epoch before getmany judged
                    # those records stale and dropped them after aiokafka had moved past them: they were never
                    # applied, and nothing fetched them again (issue 9: a broker restart under a running consumer).
                    epoch = self._epoch
                except OffsetOutOfRangeError as exc:
                    await self._out_of_range(exc.args[0] if exc.args else {})
                    continue
                except NoOffsetForPartitionError:
                    continue  # fetched before the assignment callback positioned the partition; it has been since
                if self.pipelined:
                    # Decode this batch while the previous one is still being applied (its transaction waits on
                    # the database), then apply it only once that one is done: batches still apply one at a time,
                    # in order, each with its offsets.
                    prepared = await self._prepare(batch, epoch) if batch else None
                    if applying is not None:
                        await applying
                        applying = None
                    await self._check_log_ends(consumer)
                    if prepared is not None:
                        applying = asyncio.create_task(self._finish(prepared))
                        await asyncio.sleep(0)  # let it start (up to its first wait) before decoding the next
                    continue
                if batch:
                    await self._handle_fetched(batch, epoch)
                await self._check_log_ends(consumer)
            if applying is not None:
                await applying
            graceful = True
        finally:
            if applying is not None and not applying.done():
                applying.cancel()
                with contextlib.suppress(BaseException):
                    await applying
            if graceful:  # between batches: let a stateful consumer checkpoint what it holds before leaving
                await self.revoked(list(consumer.assignment()))
            self._consumer = None
            for task in (self._committing, self._reprovisioning):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), timeout=10)

    async def stop(self) -> None:
        """Finish the batch in hand, then leave the group (a stateful listener hears on_revoked first)."""
        self._stopping.set()

    async def _connect(self) -> AIOKafkaConsumer:
        backoff = Backoff(cap_s=10.0)
        while True:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap_servers,
                group_id=self.group,
                client_id=self.group,
                enable_auto_commit=False,
                auto_offset_reset="none",  # positions come from the listener; a lost log must not pass silently
                fetch_max_wait_ms=self.fetch_max_wait_ms,
                max_poll_records=self.max_records,
            )
            consumer.subscribe(list(self.by_name), listener=_Rebalance(self))
            self._consumer = consumer  # the first assignment may come while start() runs
            try:
                await consumer.start()
                return consumer
            except Exception as exc:
                with contextlib.suppress(Exception):
                    await consumer.stop()
                delay = backoff.next_delay()
                log.warning(
                    "%s cannot reach Kafka at %s (%s); retrying in %.1f s",
                    self.group,
                    self.bootstrap_servers,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)

    # -- rebalancing -------------------------------------------------------------------------------------------

    async def assigned(self, tps: list[TopicPartition]) -> None:
        self._epoch += 1
        consumer = self._consumer_or_raise()
        parts = [(tp.topic, tp.partition) for tp in tps]
        backoff = Backoff(cap_s=10.0)
        while True:  # a partition must never start from a guessed position: wait for the store to answer
            try:
                stored = dict(await self.listener.on_assigned(parts)) if parts else {}
                starts = await consumer.beginning_offsets(tps) if tps else {}
                forgot = await self._broker_forgot(consumer, tps)
                break
            except Exception as exc:
                delay = backoff.next_delay()
                log.error("%s cannot load positions of %s (%r); retrying in %.1f s", self.group, parts, exc, delay)
                self.metrics.systemic.labels(self.group, type(exc).__name__).inc()
                await asyncio.sleep(delay)
        self._expected = {}
        for tp in tps:
            next_offset = stored.get((tp.topic, tp.partition))
            if next_offset is None and self.fallback_to_committed:
                # First start after consumers committed to Kafka (before offsets moved into the database).
                next_offset = await consumer.committed(tp)
            # A stored offset beyond the log end (the broker lost its log) shows in the first fetch's high
            # watermark (`_check_log_ends`), not here: the embedded broker answers ListOffsets with its last
            # batch's first offset + 1, which made every restart after a multi-record batch look like a lost log
            # and read whole partitions again.
            # Explicit offsets only: awaiting seek_to_beginning() here can wait on the fetcher, which waits on us.
            position = next_offset if next_offset is not None else starts[tp]
            if tp in forgot and next_offset is not None and next_offset > starts[tp]:
                log.error(
                    "%s: the broker no longer has the offsets this process committed on %s-%d (it restarted "
                    "empty); its log may have refilled past the stored position %d, so it is read again from "
                    "the beginning (already-applied events are skipped by event id)",
                    self.group,
                    tp.topic,
                    tp.partition,
                    next_offset,
                )
                # (The log's true end is unknown here; its beginning is what the listener is told.)
                await self._regressed(tp, next_offset, starts[tp], explained=True)
                position = starts[tp]
                self._kafka_committed.discard(tp)  # noticed once per loss; the next commit re-arms it
            consumer.seek(tp, position)
            self._expected[tp] = position
        log.info("%s assigned %s", self.group, sorted(parts))

    async def revoked(self, tps: list[TopicPartition]) -> None:
        async with self._lock:  # let the batch in flight commit first
            for tp in tps:
                self._expected.pop(tp, None)
            parts = [(tp.topic, tp.partition) for tp in tps]
            if parts:
                try:
                    await self.listener.on_revoked(parts)
                except Exception:
                    log.exception("%s: on_revoked failed for %s", self.group, parts)

    async def _regressed(self, tp: TopicPartition, stored: int, log_end: int, *, explained: bool = False) -> None:
        if not explained:
            log.error(
                "%s: offset regression on %s-%d: stored next offset %d is beyond the log end %d (the broker lost "
                "its log); reading it again from the beginning, already-applied events are skipped by event id",
                self.group,
                tp.topic,
                tp.partition,
                stored,
                log_end,
            )
        self.metrics.regressions.labels(self.group, tp.topic).inc()
        if self.on_log_lost is not None and (self._reprovisioning is None or self._reprovisioning.done()):
            self._reprovisioning = asyncio.create_task(self._reprovision(self.on_log_lost))
        if hook := getattr(self.listener, "on_offset_regression", None):
            try:
                await hook((tp.topic, tp.partition), stored, log_end)
            except Exception:
                log.exception("%s: on_offset_regression failed", self.group)

    async def _reprovision(self, hook: Callable[[], Awaitable[Any]]) -> None:
        try:
            created = await hook()
            log.warning("%s: the broker lost its log; re-created topics %s", self.group, created or "(none missing)")
        except Exception:
            log.exception("%s: re-creating the topics after a lost log failed", self.group)

    async def _check_log_ends(self, consumer: AIOKafkaConsumer) -> None:
        """A position beyond the log end the last fetch reported means the broker lost its log: the embedded one
        then answers fetches with nothing (no out-of-range error), and would skip the new log's first events.
        (The fetch's high watermark, not ListOffsets: the embedded broker answers that with its last batch's first
        offset + 1.)"""
        for tp, expected, high in log_end_regressions(consumer, self._expected):
            await self._regressed(tp, expected, high)
            start = (await consumer.beginning_offsets([tp]))[tp]
            consumer.seek(tp, start)
            self._expected[tp] = start
            self._epoch += 1  # batches fetched before are stale

    async def _out_of_range(self, positions: Mapping[TopicPartition, int]) -> None:
        consumer = self._consumer_or_raise()
        tps = list(positions)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            if positions[tp] > ends[tp]:
                await self._regressed(tp, positions[tp], ends[tp])
            else:
                log.error(
                    "%s: offset %d of %s-%d is gone (retention); resuming at the earliest",
                    self.group,
                    positions[tp],
                    tp.topic,
                    tp.partition,
                )
            await consumer.seek_to_beginning(tp)
            self._expected.pop(tp, None)  # known again after the next batch

    async def _commit(self, consumer: AIOKafkaConsumer, offsets: Mapping[TopicPartition, int]) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5.0):
                await consumer.commit(dict(offsets))
                self._kafka_committed.update(offsets)

    async def _broker_forgot(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> set[TopicPartition]:
        """The partitions this process had Kafka commit offsets for and that Kafka now has none for: the broker
        lost its state (the embedded one keeps everything in memory; a restart empties it). Its log may have
        refilled past our position before we fetch again, which the high watermark cannot show."""
        forgot = set()
        for tp in tps:
            if tp in self._kafka_committed and await consumer.committed(tp) is None:
                forgot.add(tp)
        return forgot

    def _consumer_or_raise(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("consumer not started")
        return self._consumer

    # -- batches -----------------------------------------------------------------------------------------------

    async def _handle_fetched(self, batch: Mapping[TopicPartition, list[Any]], epoch: int) -> None:
        consumer = self._consumer_or_raise()
        async with self._lock:
            if epoch != self._epoch:
                return  # a rebalance re-positioned every partition since this was fetched
            assignment = consumer.assignment()
            records = [r for tp, rs in batch.items() if tp in assignment for r in rs]
            if not records:
                return
            # One span per batch, linked to each event's trace, rather than one per event.
            with self._span(records):
                batch_end = _next_offsets(records)
                deliveries = await self._decode(records)
                if not await self._apply(deliveries, batch_end, epoch):
                    return
        self._advance(consumer, batch, batch_end)

    def _span(self, records: list[Any]) -> Any:
        return _tracer.start_as_current_span(
            f"{self.group} process",
            kind=SpanKind.CONSUMER,
            links=trace_links(records),
            attributes={"messaging.system": "kafka", "messaging.batch.message_count": len(records)},
        )

    async def _prepare(self, batch: Mapping[TopicPartition, list[Any]], epoch: int) -> _Prepared | None:
        """The pipelined consumer's first stage: decode a batch (outside the lock, while the one before applies)."""
        consumer = self._consumer_or_raise()
        if epoch != self._epoch:
            return None
        assignment = consumer.assignment()
        records = [r for tp, rs in batch.items() if tp in assignment for r in rs]
        if not records:
            return None
        return _Prepared(batch, epoch, records, _next_offsets(records), await self._decode(records))

    async def _finish(self, prepared: _Prepared) -> None:
        """The second stage: apply a decoded batch (stale if a rebalance or a lost log re-positioned since)."""
        consumer = self._consumer_or_raise()
        async with self._lock:
            if prepared.epoch != self._epoch:
                return
            with self._span(prepared.records):
                if not await self._apply(prepared.deliveries, prepared.batch_end, prepared.epoch):
                    return
        self._advance(consumer, prepared.batch, prepared.batch_end)

    def _advance(
        self, consumer: AIOKafkaConsumer, batch: Mapping[TopicPartition, list[Any]], batch_end: Mapping[Partition, int]
    ) -> None:
        """After a batch applied: the positions expected next, the lag gauges and Kafka's copy of the offsets."""
        for tp, records_of_tp in batch.items():
            if records_of_tp and tp in self._expected:
                self._expected[tp] = records_of_tp[-1].offset + 1
            if records_of_tp and (hw := consumer.highwater(tp)) is not None:
                lag = max(0, hw - records_of_tp[-1].offset - 1)
                self.metrics.lag.labels(self.group, tp.topic, str(tp.partition)).set(lag)
        # Kafka's copy of the offsets serves lag reports (om status, tools) only: committed in the background,
        # one commit at a time, never holding up the next batch (aiokafka retries some commit errors for as long
        # as they last, e.g. the embedded broker's "unknown topic" for a topic re-created after it restarted).
        assigned = consumer.assignment()
        committed = {tp: o for (t, p), o in batch_end.items() if (tp := TopicPartition(t, p)) in assigned}
        if committed and (self._committing is None or self._committing.done()):
            self._committing = asyncio.create_task(self._commit(consumer, committed))

    async def _decode(self, records: list[Any]) -> list[Delivery]:
        """Decode each record once; dead-letter those that are not valid events (poison by definition)."""
        deliveries: list[Delivery] = []
        for index, record in enumerate(records):
            if index and not index % DECODE_SLICE:
                await asyncio.sleep(0)
            topic = self.by_name[record.topic]
            try:
                deliveries.append(_delivery(topic, record))
            except DecodeError as exc:
                log.warning("dead-lettered a message from %s: %s", topic.name, exc.reason)
                await self.publisher.dead_letter(self.group, record, record.value or b"", exc.reason)
                self.metrics.dead_letters.labels(self.group, topic.name, "decode").inc()
        return deliveries

    async def _apply(self, deliveries: list[Delivery], batch_end: Mapping[Partition, int], epoch: int) -> bool:
        """Apply a batch; return False when a rebalance made it stale on the way (it will be fetched again)."""
        pending = deliveries
        conflicts = 0  # transactions rolled back by a deadlock or serialization failure, retried at once
        while True:
            if epoch != self._epoch or self._stopping.is_set():
                return False
            try:
                if not pending:
                    await self.process([], batch_end)
                    return True
                try:
                    await self.process(pending, batch_end)
                    self._applied(pending)
                    return True
                except Exception as exc:
                    if is_retry_now(exc) and conflicts < RETRY_NOW_ATTEMPTS:
                        conflicts += 1
                        log.warning("%s: a batch of %d rolled back (%s); retrying now", self.group, len(pending), exc)
                        continue
                    if is_systemic(exc):
                        raise _Systemic(exc, f"{type(exc).__name__}: {exc}") from exc
                    log.warning(
                        "%s: a batch of %d failed (%r); applying its events one by one", self.group, len(pending), exc
                    )
                pending = await self._isolate(pending, batch_end)
                if not pending:
                    return True
            except _Systemic as systemic:
                await self._pause(systemic, len(pending))

    async def _isolate(self, batch: list[Delivery], batch_end: Mapping[Partition, int]) -> list[Delivery]:
        """Apply each event alone. Returns [] when done (poison dead-lettered), else the suspects to retry later.
        Raises _Systemic (with what is left in `batch`) when the infrastructure fails meanwhile."""
        failures: list[tuple[Delivery, BaseException]] = []
        blocked: set[Partition] = set()  # partitions whose stored offset must not pass an unresolved suspect
        for index, delivery in enumerate(batch):
            part = (delivery.topic.name, delivery.partition)
            offsets = {} if part in blocked else {part: delivery.offset + 1}
            try:
                error = await self._try_alone(delivery, offsets)
            except _Systemic:
                batch[:] = [d for d, _ in failures] + batch[index:]
                raise
            if error is None:
                self._applied([delivery])
                self.streak.success()
            else:
                failures.append((delivery, error))
                blocked.add(part)
        if not failures:
            await self.process([], batch_end)
            return []
        verdict = judge_isolated(len(batch), [e for _, e in failures])
        if not verdict.systemic and len(batch) == 1 and self.streak.failure(failures[0][1]):
            verdict = verdict.__class__(True, f"{self.streak.limit} events in a row failed alone the same way")
        suspects = [d for d, _ in failures]
        if verdict.systemic:
            batch[:] = suspects
            raise _Systemic(failures[0][1], verdict.reason)
        for delivery, error in failures:
            reason = (
                f"{delivery.topic.name} event {delivery.event.event_id} could not be applied "
                f"({POISON_ATTEMPTS} attempts): {type(error).__name__}: {error}"
            )
            log.error("%s dead-lettered: %s", self.group, reason)
            await self.publisher.dead_letter(self.group, delivery.record, delivery.record.value or b"", reason)
            self.metrics.dead_letters.labels(self.group, delivery.topic.name, "apply").inc()
        await self.process([], batch_end)
        return []

    async def _try_alone(self, delivery: Delivery, offsets: Mapping[Partition, int]) -> BaseException | None:
        error: BaseException | None = None
        for attempt in range(POISON_ATTEMPTS):
            try:
                await self.process([delivery], offsets)
                return None
            except Exception as exc:
                if is_systemic(exc):
                    raise _Systemic(exc, f"{type(exc).__name__}: {exc}") from exc
                error = exc
                await asyncio.sleep(0.05 * (attempt + 1))
        return error

    async def _pause(self, systemic: _Systemic, size: int) -> None:
        delay = self.backoff.next_delay()
        self.metrics.systemic.labels(self.group, type(systemic.cause).__name__).inc()
        log.error(
            "%s: systemic failure, nothing dead-lettered; %d event(s) will be retried in %.1f s: %s",
            self.group,
            size,
            delay,
            systemic.reason,
        )
        self.metrics.backing_off.labels(self.group).set(1)
        self._lock.release()  # a rebalance may proceed while we wait
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)
        finally:
            await self._lock.acquire()
            self.metrics.backing_off.labels(self.group).set(0)

    def _applied(self, deliveries: list[Delivery]) -> None:
        self.backoff.reset()
        per_topic: dict[str, list[datetime]] = {}  # one metrics update per topic and batch, not per event
        for d in deliveries:
            # Event time; the record's timestamp for raw intake records that may leave it out.
            per_topic.setdefault(d.topic.name, []).append(getattr(d.event, "occurred_at", None) or d.timestamp)
        now = datetime.now(UTC)  # one clock read for the batch's latencies
        for name, events in per_topic.items():
            self.metrics.applied(self.group, name, events, now)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka ships no types: the base is Any
    def __init__(self, owner: GroupConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
        await self.owner.revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
        await self.owner.assigned(list(assigned))


def _delivery(topic: Topic, record: Any) -> Delivery:
    return Delivery(
        topic=topic,
        event=decode(topic, record.value or b""),
        partition=record.partition,
        offset=record.offset,
        timestamp=datetime.fromtimestamp(record.timestamp / 1000, UTC)
        if record.timestamp is not None
        else datetime.now(UTC),
        record=record,
    )


def log_end_regressions(
    consumer: AIOKafkaConsumer, expected: Mapping[TopicPartition, int]
) -> list[tuple[TopicPartition, int, int]]:
    """The partitions whose expected next offset is beyond the log end the last fetch reported (its high
    watermark), as (partition, expected, log end): the broker lost its log. The embedded broker answers a fetch
    beyond its new, shorter log with nothing rather than an out-of-range error, and ListOffsets cannot tell (it
    answers with the last batch's first offset + 1). Public for consumers with their own loop (feature's)."""
    found = []
    for tp, position in list(expected.items()):
        high = consumer.highwater(tp)
        if high is not None and position > high:
            found.append((tp, position, high))
    return found


def trace_links(records: list[Any], limit: int = MAX_LINKS) -> list[Link]:
    """Span links to the trace contexts in the records' `traceparent` headers (the first `limit` records): a batch
    span links to the work of the events it reads, rather than one span per event."""
    links = []
    for record in records[:limit]:
        carrier = {k: v.decode(errors="replace") for k, v in record.headers or () if k == "traceparent"}
        if carrier:
            context = trace.get_current_span(_propagator.extract(carrier)).get_span_context()
            if context.is_valid:
                links.append(Link(context))
    return links


def _next_offsets(records: list[Any]) -> dict[Partition, int]:
    offsets: dict[Partition, int] = {}
    for r in records:
        part = (r.topic, r.partition)
        offsets[part] = max(offsets.get(part, 0), r.offset + 1)
    return offsets


class NoPositions:
    """A listener for consumers without their own state: start every partition from the earliest."""

    async def on_assigned(self, partitions: list[Partition]) -> Mapping[Partition, int]:
        return {}

    async def on_revoked(self, partitions: list[Partition]) -> None:
        return None
