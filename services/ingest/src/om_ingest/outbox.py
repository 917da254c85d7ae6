"""The outbox relay: publishes events that committed transactions wrote to the `outbox` table, then deletes them.

A write and its event commit together, so an event is never published for a rolled-back write nor lost for a
committed one. Publishing is at-least-once: a crash between publish and delete republishes the same event ids,
which consumers dedupe.

Not a single bottleneck: every row carries a `slot` (0..63, a hash of its Kafka key, so one market's events share a
slot), and each process runs `shards` relay loops, each owning the slots ≡ its number (mod `shards`). A loop takes a
transaction-scoped advisory lock per slot before reading it, so however many processes and loops run, one slot is
published by one transaction at a time, in id order: each market's events stay in order, and different slots are
published in parallel. When Kafka is down the rows simply wait (writes keep succeeding); the loops back off, make
sure the topics exist again (an in-memory broker forgets them), and drain the backlog once it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
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


async def publish_pending(
    db: Database, publisher: EventPublisher, batch_size: int, slots: list[int], *, confirm_timeout_s: float = 10.0
) -> int:
    """Publish up to `batch_size` outbox events of those `slots` no other relay holds, in id order; delete them
    in the same transaction once Kafka confirmed every one. Return how many were published.

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
        cur = await conn.execute(
            "SELECT id, topic, key, payload, headers FROM outbox WHERE slot = ANY(%s) ORDER BY id LIMIT %s",
            (mine, batch_size),
        )
        rows = await cur.fetchall()
        if not rows:
            return 0
        # One span per batch, linked to the trace of each request that wrote an event (not a span per event).
        links = [trace.Link(ctx) for row in rows if (ctx := _span_context(row["headers"])) is not None]
        with tracer.start_as_current_span("outbox relay", links=links[:128]):
            async with asyncio.timeout(confirm_timeout_s), publisher.confirmed_together():
                await _send(publisher, rows)
        await conn.execute("DELETE FROM outbox WHERE id = ANY(%s)", ([r["id"] for r in rows],))
        return len(rows)


async def _send(publisher: EventPublisher, rows: list[dict[str, Any]]) -> None:
    """Send the rows in order and wait until Kafka confirmed all of them. Each message carries `content-type`,
    `event_type` and the trace context of the request that wrote it.

    The hot path hands the messages straight to aiokafka's producer under FastStream: FastStream's publish path
    (a middleware chain and a span per message) cost about 1 ms per event here, aiokafka's `send` a few µs."""
    producer = _aiokafka_producer(publisher)
    if producer is None:
        for row in rows:
            headers = {"content-type": "application/json", **row["headers"]}
            await publisher.publish_bytes(row["topic"], bytes(row["payload"]), key=row["key"].encode(), headers=headers)
        return
    sent = []
    for row in rows:
        headers = [("content-type", b"application/json"), *((k, v.encode()) for k, v in row["headers"].items())]
        sent.append(await producer.send(row["topic"], bytes(row["payload"]), key=row["key"].encode(), headers=headers))
    await asyncio.gather(*sent)


def _aiokafka_producer(publisher: EventPublisher) -> Any:
    """The started aiokafka producer behind the publisher's FastStream broker, or None (not started, FastStream's
    in-memory test broker, or internals that moved in another FastStream version: then the regular path is used)."""
    try:
        producer = publisher.broker._producer._producer.producer  # noqa: SLF001
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
) -> None:
    """Publish forever with `shards` loops: woken by NOTIFY from writers, and polling in case one was missed
    (or written by another replica). After a failure, `after_failure` (e.g. re-creating the topics, which an
    in-memory broker forgets when it restarts) must succeed before publishing resumes, so while the broker is
    down no further batches are sent into the void."""
    wake = [asyncio.Event() for _ in range(shards)]

    async def listen() -> None:
        async with await psycopg.AsyncConnection.connect(db.url, autocommit=True) as listener:
            await listener.execute(f"LISTEN {CHANNEL}")
            async for _ in listener.notifies():
                for event in wake:
                    event.set()

    async def publish(shard: int) -> None:
        slots, backoff, failing = shard_slots(shard, shards), 0.0, False
        while True:
            wake[shard].clear()
            try:
                if failing and after_failure is not None:
                    await after_failure()
                published = await publish_pending(db, publisher, batch_size, slots, confirm_timeout_s=confirm_timeout_s)
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

    async with asyncio.TaskGroup() as group:
        group.create_task(listen(), name="outbox-listen")
        for shard in range(shards):
            group.create_task(publish(shard), name=f"outbox-relay-{shard}")
