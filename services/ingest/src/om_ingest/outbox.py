"""The outbox relay: publishes events that committed transactions wrote to the `outbox` table, then marks them
published; they are deleted once older than a retention window.

A write and its event commit together, so an event is never published for a rolled-back write nor lost for a
committed one. Publishing is at-least-once: a crash between publish and delete republishes the same event ids,
which consumers dedupe.

Not a single bottleneck: every row carries a `slot` (0..63, a hash of its Kafka key, so one market's events share a
slot), and each process runs `shards` relay loops, each owning the slots ≡ its number (mod `shards`). A loop takes a
transaction-scoped advisory lock per slot before reading it, so however many processes and loops run, one slot is
published by one transaction at a time, in id order: each market's events stay in order, and different slots are
published in parallel. When Kafka is down the rows simply wait (writes keep succeeding); the loops back off, make
sure the topics exist again (an in-memory broker forgets them), and drain the backlog once it answers.

A broker that lost its log (the embedded one keeps it in memory; a restart empties it) would lose the events it
had confirmed but no consumer had read yet. So the relay remembers the highest offset Kafka confirmed per
partition, and checks after a failure and every few seconds that each partition's log still reaches that far. If
one does not (or its topic is gone), every event published within the retention window is published again, in id
order: consumers dedupe by event id, and consumers that read past the new log end start again from its beginning.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, NamedTuple

import psycopg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from opentelemetry import propagate, trace

from om_runtime.db import Database
from om_runtime.kafka import EventPublisher

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

CHANNEL = "ingest_outbox"
SLOTS = 64  # written with each row (see store.enqueue); fixed, so changing the number of shards is always safe
RELAY_LOCK_CLASS = 0x6F6D_0001  # first key of the (class, slot) advisory locks
MAX_BACKOFF_S = 5.0


def shard_slots(shard: int, shards: int) -> list[int]:
    """The slots relay loop `shard` (of `shards`) publishes."""
    return [slot for slot in range(SLOTS) if slot % shards == shard]


class LogLost(Exception):
    """Kafka confirmed events at offsets it had confirmed before: the broker lost its log."""

    def __init__(self, partitions: list[str], generation: int) -> None:
        super().__init__(f"offsets went back on {', '.join(partitions)}")
        self.partitions = partitions
        self.generation = generation


class PublishedOffsets:
    """The highest offset Kafka confirmed per partition, to tell whether the broker still has what it confirmed."""

    def __init__(self) -> None:
        self.highest: dict[tuple[str, int], int] = {}
        self.generation = 0  # bumped when the broker lost its log and the window is published again

    def snapshot(self) -> tuple[int, dict[tuple[str, int], int]]:
        return self.generation, dict(self.highest)

    def record(self, confirmations: list[Any], before: tuple[int, dict[tuple[str, int], int]]) -> None:
        """Note a batch's confirmations (aiokafka RecordMetadata). Everything in `before` (taken before the batch
        was sent) was confirmed earlier, so the batch's offsets must all lie beyond it; raise LogLost if not."""
        lowest: dict[tuple[str, int], int] = {}
        highest: dict[tuple[str, int], int] = {}
        for meta in confirmations:
            part, offset = (meta.topic, meta.partition), meta.offset
            if offset < lowest.get(part, offset + 1):
                lowest[part] = offset
            if offset > highest.get(part, -1):
                highest[part] = offset
        generation, earlier = before
        regressed = [f"{t}-{p}" for (t, p), offset in lowest.items() if offset <= earlier.get((t, p), -1)]
        if regressed:
            raise LogLost(regressed, generation)
        for part, offset in highest.items():
            if offset > self.highest.get(part, -1):
                self.highest[part] = offset

    async def lost(self, consumer: AIOKafkaConsumer) -> list[str]:
        """The partitions (as "topic-partition") that Kafka confirmed events on and whose log is now empty.

        Only emptiness is telling: the embedded broker answers a log-end query with its last batch's first offset
        + 1, which is below what it confirmed whenever that batch held several events. A log that lost events and
        then took new ones shows on the next confirmation instead (`record`)."""
        if not self.highest:
            return []
        parts = [TopicPartition(t, p) for t, p in self.highest]
        ends = await consumer.end_offsets(parts)
        return [f"{tp.topic}-{tp.partition}" for tp in parts if ends[tp] == 0]


class LogWatch:
    """Notices that the broker lost its log and has the events of the retention window published again."""

    def __init__(
        self,
        db: Database,
        bootstrap_servers: str,
        retention: timedelta,
        *,
        timeout_s: float = 10.0,
        settle_s: float = 3.0,
    ) -> None:
        self.db = db
        self.settle_s = settle_s
        #: Publishing waits until then after a loss, so that consumers see the emptied log (their position beyond
        #: its end) before it fills again, and start over from its beginning rather than from their old position.
        self.paused_until = 0.0
        self.bootstrap_servers = bootstrap_servers
        self.retention = retention
        self.timeout_s = timeout_s
        self.confirmed = PublishedOffsets()
        self.republished = 0  # events published again so far (tests, logs)
        self._lock = asyncio.Lock()
        self._consumer: AIOKafkaConsumer | None = None

    async def check(self) -> bool:
        """Compare each partition's log end with what Kafka confirmed; on a loss, republish. Raises when Kafka
        does not answer (then nothing can be told)."""
        generation = self.confirmed.generation
        try:
            async with asyncio.timeout(self.timeout_s):
                if self._consumer is None:
                    # Kept before start(): a start that fails must still be stopped (close() below).
                    self._consumer = AIOKafkaConsumer(
                        bootstrap_servers=self.bootstrap_servers, client_id="ingest-outbox"
                    )
                    await self._consumer.start()
                lost = await self.confirmed.lost(self._consumer)
        except BaseException:
            await self.close()  # a fresh client next time
            raise
        if lost:
            await self.recover(LogLost(lost, generation))
        return bool(lost)

    async def recover(self, loss: LogLost) -> None:
        """Publish the retention window again (once per loss, however many relay loops noticed it)."""
        async with self._lock:
            if loss.generation != self.confirmed.generation:
                return  # another loop already did
            count = await republish_window(self.db, self.retention)
            self.confirmed.highest.clear()
            self.confirmed.generation += 1
            self.republished += count
            self.paused_until = time.monotonic() + self.settle_s
        log.error(
            "the broker lost its log (%s); publishing the %d event(s) of the last %s again "
            "(consumers skip those they applied, by event id)",
            loss,
            count,
            self.retention,
        )

    async def close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            with contextlib.suppress(Exception):
                await consumer.stop()


async def publish_pending(
    db: Database,
    publisher: EventPublisher,
    batch_size: int,
    slots: list[int],
    *,
    confirm_timeout_s: float = 10.0,
    confirmed: PublishedOffsets | None = None,
) -> int:
    """Publish up to `batch_size` unpublished outbox events of those `slots` no other relay holds, each slot's in id
    order; mark them published in the same transaction once Kafka confirmed every one (and note the confirmed offsets in
    `confirmed`). Return how many were published.

    Confirmations that take longer than `confirm_timeout_s` (the broker is down) fail the batch: the rows stay and
    are published again later, rather than a confirmation arriving only after the broker came back empty."""
    async with db.transaction() as conn:
        cur = await conn.execute(
            "SELECT slot FROM unnest(%s::int[]) AS slot WHERE pg_try_advisory_xact_lock(%s, slot)",
            (slots, RELAY_LOCK_CLASS),
        )
        mine = [row["slot"] for row in await cur.fetchall()]
        if not mine:
            return 0
        # Slot by slot, each in id order (a market's events share a slot: their order is all that matters), each
        # slot an index range scan that stops at the batch's size. One `ORDER BY id` over all of them sorted every
        # pending row of those slots for each batch: under a backlog of 100,000 rows PostgreSQL spent 3x the CPU
        # per published row and the relay fell behind for good. The first slot rotates from batch to batch, so
        # a busy slot cannot keep the others waiting. Headers as text: the rows of one write share them, so each
        # distinct text is parsed once (below).
        start = next(_rotation) % len(mine)
        cur = await conn.execute(
            "SELECT o.id, o.topic, o.key, o.payload, o.headers::text AS headers "
            "FROM unnest(%s::smallint[]) WITH ORDINALITY AS s(slot, n) CROSS JOIN LATERAL ("
            "  SELECT id, topic, key, payload, headers FROM outbox "
            "  WHERE outbox.slot = s.slot AND published_at IS NULL ORDER BY id LIMIT %s"
            ") AS o ORDER BY s.n, o.id LIMIT %s",
            (mine[start:] + mine[:start], batch_size, batch_size),
        )
        rows = await cur.fetchall()
        if not rows:
            return 0
        headers = {text: json.loads(text) for text in {row["headers"] for row in rows}}
        # One span per batch, linked to the trace of each request that wrote an event (not a span per event).
        links = [trace.Link(ctx) for h in list(headers.values())[:128] if (ctx := _span_context(h)) is not None]
        before = confirmed.snapshot() if confirmed is not None else None
        with tracer.start_as_current_span("outbox relay", links=links):
            async with asyncio.timeout(confirm_timeout_s), publisher.confirmed_together():
                confirmations = await _send(publisher, rows, headers)
        if confirmed is not None and before is not None:
            confirmed.record(confirmations, before)  # raises LogLost: the rows stay unpublished
        await conn.execute("UPDATE outbox SET published_at = now() WHERE id = ANY(%s)", ([r["id"] for r in rows],))
        return len(rows)


async def _send(publisher: EventPublisher, rows: list[dict[str, Any]], headers: dict[str, dict[str, str]]) -> list[Any]:
    """Send the rows in order and wait until Kafka confirmed all of them; return the confirmations (topic,
    partition and offset of each batch's first and last event) when sent through aiokafka. Each message carries
    `content-type`, `event_type` and the trace context of the request that wrote it.

    The hot path hands the messages straight to aiokafka's producer under FastStream: FastStream's publish path
    (a middleware chain and a span per message) cost about 1 ms per event here, aiokafka's `send` a few µs."""
    producer = _aiokafka_producer(publisher)
    if producer is None:
        for row in rows:
            extra = {"content-type": "application/json", **headers[row["headers"]]}
            await publisher.publish_bytes(row["topic"], bytes(row["payload"]), key=row["key"].encode(), headers=extra)
        return []
    encoded = {
        text: [("content-type", b"application/json"), *((k, v.encode()) for k, v in h.items())]
        for text, h in headers.items()
    }
    # Batches built here, one open per partition, handed to aiokafka whole: `send` per message (its checks, a
    # partitioner call, a future per message) cost about 2.5x the CPU per event. Messages keep their order: rows
    # are appended in id order, a partition's batches are sent in the order they filled, and aiokafka keeps one
    # request in flight per broker. Keys go through Kafka's default partitioner, as `send` does with no partition.
    partitions: dict[str, list[int]] = {}
    open_batches: dict[tuple[str, int], tuple[Any, int]] = {}  # (topic, partition) -> (batch, rows in it)
    sent: list[tuple[str, int, int, asyncio.Future[Any]]] = []  # (topic, partition, rows, confirmation)

    async def flush(topic: str, partition: int) -> None:
        batch, count = open_batches.pop((topic, partition))
        batch.close()
        sent.append((topic, partition, count, await producer.send_batch(batch, topic, partition=partition)))

    for row in rows:
        topic, key, value, meta = row["topic"], row["key"].encode(), bytes(row["payload"]), encoded[row["headers"]]
        if (known := partitions.get(topic)) is None:
            known = partitions[topic] = sorted(await producer.partitions_for(topic))
        partition = _PARTITIONER(key, known, known)
        if (current := open_batches.get((topic, partition))) is not None:
            batch, count = current
            if batch.append(key=key, value=value, timestamp=None, headers=meta) is not None:
                open_batches[(topic, partition)] = (batch, count + 1)
                continue
            await flush(topic, partition)  # full: send it, start the next one
        batch = producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None, headers=meta) is None:
            # Larger than a batch: aiokafka's `send` sizes a batch to fit it (queued behind this partition's).
            confirmation = await producer.send(topic, value, key=key, partition=partition, headers=meta)
            sent.append((topic, partition, 1, confirmation))
            continue
        open_batches[(topic, partition)] = (batch, 1)
    for topic, partition in list(open_batches):
        await flush(topic, partition)
    confirmations: list[Any] = []
    for (topic, partition, count, _), meta in zip(sent, await asyncio.gather(*(f for *_, f in sent)), strict=True):
        # The batch's first and last offsets: all PublishedOffsets needs to tell whether the log went back.
        confirmations.append(_Confirmed(topic, partition, meta.offset))
        confirmations.append(_Confirmed(topic, partition, meta.offset + count - 1))
    return confirmations


class _Confirmed(NamedTuple):
    topic: str
    partition: int
    offset: int


_PARTITIONER = DefaultPartitioner()
_rotation = itertools.count()  # which of its slots a relay loop reads first


async def republish_window(db: Database, retention: timedelta) -> int:
    """Mark every event published within `retention` unpublished again; return how many."""
    async with db.transaction() as conn:
        cur = await conn.execute(
            "UPDATE outbox SET published_at = NULL WHERE published_at >= now() - %s::interval", (retention,)
        )
        return cur.rowcount


async def prune_published(db: Database, retention: timedelta) -> int:
    """Delete events published longer than `retention` ago; return how many."""
    async with db.transaction() as conn:
        cur = await conn.execute("DELETE FROM outbox WHERE published_at < now() - %s::interval", (retention,))
        return cur.rowcount


def _aiokafka_producer(publisher: EventPublisher) -> Any:
    """The started aiokafka producer behind the publisher's FastStream broker, or None (not started, FastStream's
    in-memory test broker, or internals that moved in another FastStream version: then the regular path is used)."""
    broker: Any = publisher.broker  # FastStream's internals are not part of its typed API
    try:
        producer = broker._producer._producer.producer  # noqa: SLF001
    except AttributeError:
        return None
    return producer if hasattr(producer, "send") else None


def _span_context(headers: dict[str, str]) -> trace.SpanContext | None:
    context = trace.get_current_span(propagate.extract(headers)).get_span_context()
    return context if context.is_valid else None


async def relay(
    db: Database,
    publisher: EventPublisher,
    *,
    batch_size: int,
    poll_interval_s: float,
    shards: int = 4,
    confirm_timeout_s: float = 10.0,
    after_failure: Callable[[], Awaitable[object]] | None = None,
    watch: LogWatch | None = None,
    log_check_s: float = 2.0,
) -> None:
    """Publish forever with `shards` loops: woken by NOTIFY from writers, and polling in case one was missed
    (or written by another replica). After a failure, `after_failure` (e.g. re-creating the topics, which an
    in-memory broker forgets when it restarts) must succeed before publishing resumes, so while the broker is
    down no further batches are sent into the void. With a `watch`, a broker that lost its log is noticed (after
    a failure, on a confirmation, and every `log_check_s`) and given the retention window's events again; published
    events older than the window are deleted."""
    wake = [asyncio.Event() for _ in range(shards)]

    def wake_all() -> None:
        for event in wake:
            event.set()

    async def listen() -> None:
        async with await psycopg.AsyncConnection.connect(db.url, autocommit=True) as listener:
            await listener.execute(f"LISTEN {CHANNEL}")
            async for _ in listener.notifies():
                wake_all()

    async def publish(shard: int) -> None:
        slots, backoff, failing = shard_slots(shard, shards), 0.0, False
        confirmed = watch.confirmed if watch is not None else None
        while True:
            wake[shard].clear()
            try:
                if failing and after_failure is not None:
                    await after_failure()
                if failing and watch is not None and await watch.check():
                    wake_all()
                if watch is not None and (settle := watch.paused_until - time.monotonic()) > 0:
                    await asyncio.sleep(settle)
                published = await publish_pending(
                    db, publisher, batch_size, slots, confirm_timeout_s=confirm_timeout_s, confirmed=confirmed
                )
            except LogLost as loss:
                if watch is not None:
                    await watch.recover(loss)
                wake_all()
                continue
            except Exception as exc:  # the rows stay in the outbox; nothing is lost, so wait and try again
                backoff = min(MAX_BACKOFF_S, backoff * 2 or 0.25)
                if not failing:
                    log.warning("outbox relay %d cannot publish (%s: %s); retrying", shard, type(exc).__name__, exc)
                failing = True
                await asyncio.sleep(backoff)
                continue
            if failing:
                log.info("outbox relay %d publishes again", shard)
            backoff, failing = 0.0, False
            if published < batch_size:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that arrives
                # as it times out, and the relay would then never stop.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(poll_interval_s):
                        await wake[shard].wait()

    async def look_after(watch: LogWatch) -> None:
        """Check the broker's log now and then (a restart between batches shows no failure), and prune."""
        try:
            while True:
                await asyncio.sleep(log_check_s)
                with contextlib.suppress(Exception):  # Kafka down: the publishing loops notice and report it
                    if await watch.check():
                        wake_all()
                try:
                    await prune_published(db, watch.retention)
                except Exception as exc:  # PostgreSQL down: the rows wait for the next round
                    log.warning("outbox prune failed (%s: %s)", type(exc).__name__, exc)
        finally:
            await watch.close()

    async with asyncio.TaskGroup() as group:
        group.create_task(listen(), name="outbox-listen")
        if watch is not None:
            group.create_task(look_after(watch), name="outbox-watch")
        for shard in range(shards):
            group.create_task(publish(shard), name=f"outbox-relay-{shard}")
