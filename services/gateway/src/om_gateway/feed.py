"""Reads the update topics into the hub. Every replica reads every partition itself (no consumer group), from
`ws_history_s` ago, so its channel histories and sequence numbers (record offsets) match every other replica's.

Traced like the other consumers: one span per fetched partition batch (`<topic> process`, linked to each record's
trace), and per read one `live websocket send` span, linked to those batch spans, in which every subscriber is
written its updates (or they are queued for a busy socket), so a walk from a trade's HTTP request reaches the
push. Per read, not per client: its cost does not grow with the number of clients."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from opentelemetry import trace
from opentelemetry.trace import Link, SpanContext, SpanKind
from prometheus_client import Histogram

from om_contracts import DecodeError, decode
from om_contracts.topics import TOPICS
from om_gateway.live import SOURCES, LiveHub, Source
from om_runtime.consumer import trace_links

log = logging.getLogger(__name__)
_tracer = trace.get_tracer("om_gateway.feed")
#: Links from a batch span to its records' traces, at most (as om_runtime.consumer).
MAX_LINKS = 128
#: Records in one round, at most.
MAX_RECORDS = 2000
#: A round waits for more records at most this many lingers.
LINGER_MAX = 5


def active_sources() -> dict[str, Source]:
    """The sources whose topic is in the registry (user and health topics join once analytics adds them)."""
    known = {t.name for t in TOPICS}
    return {s.topic: s for s in SOURCES if s.topic in known}


@dataclass(frozen=True)
class FeedMetrics:
    """Where a live update's delay goes, in the gateway (all but `round` per update, for live updates only)."""

    #: Event time → read from Kafka (before the round).
    read_lag: Histogram
    #: A read's round: decoding its updates and writing them to every subscriber's socket (or queue).
    round: Histogram
    #: Event time → written to (or queued for) every subscriber: the end of its round.
    lag: Histogram


async def follow(
    hub: LiveHub,
    bootstrap: str,
    history_s: float,
    fetch_max_wait_ms: int = 10,
    metrics: FeedMetrics | None = None,
    linger_ms: float = 0.0,
) -> None:
    """Read forever. After a read returns records, more are read until none has come for `linger_ms` (at most
    LINGER_MAX × that in all) before the round, so that updates published together (a snapshot round's, split over
    partitions and fetches) reach each client in one write instead of several."""
    sources = active_sources()
    topics = {t.name: t for t in TOPICS if t.name in sources}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=fetch_max_wait_ms,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    # A start cut short by cancellation can leave its bootstrap connection open: let it finish, then stop.
    starting = asyncio.ensure_future(consumer.start())
    try:
        await asyncio.shield(starting)
        await consumer.topics()
        partitions = [
            TopicPartition(name, p) for name in topics for p in sorted(consumer.partitions_for_topic(name) or ())
        ]
        consumer.assign(partitions)
        since_ms = int((time.time() - history_s) * 1000)
        found = await consumer.offsets_for_times(dict.fromkeys(partitions, since_ms))
        ends = await consumer.end_offsets(partitions)
        for tp in partitions:
            start = found[tp].offset if found.get(tp) is not None else ends[tp]
            consumer.seek(tp, start)
            hub.read_from[(tp.topic, tp.partition)] = start
        log.info("following %d partitions of %s", len(partitions), ", ".join(topics))
        while True:
            batches = await consumer.getmany(timeout_ms=1000, max_records=MAX_RECORDS)
            if not batches:
                continue
            if linger_ms > 0:
                await _linger(consumer, batches, linger_ms)
            read_at = time.time()
            # One round per read: every batch's updates are gathered, then each client's written at once (no
            # await in between, so nothing else reaches a client meanwhile).
            read: list[tuple[SpanContext, list[tuple[float, int]]]] = []
            hub.gather()
            try:
                for tp, records in batches.items():
                    read.append(read_batch(hub, topics[tp.topic], sources[tp.topic], tp.partition, records))
            finally:
                with _tracer.start_as_current_span(
                    "live websocket send", links=[Link(context) for context, _ in read]
                ) as span:
                    hub.flush()
                    span.set_attribute("om.websocket.updates", sum(len(updates) for _, updates in read))
                    span.set_attribute("om.websocket.deliveries", sum(n for _, updates in read for _, n in updates))
            if metrics is not None:
                now = time.time()
                metrics.round.observe(now - read_at)
                for _, updates in read:
                    for occurred_at, _ in updates:
                        if (behind := now - occurred_at) < 60:  # (not the history read at start)
                            metrics.read_lag.observe(read_at - occurred_at)
                            metrics.lag.observe(behind)
    finally:
        with contextlib.suppress(Exception):
            await starting
        await consumer.stop()


async def _linger(consumer: AIOKafkaConsumer, batches: dict[TopicPartition, list[Any]], linger_ms: float) -> None:
    """Add to `batches` what keeps arriving, until nothing has for `linger_ms`, for at most LINGER_MAX × that (and
    at most MAX_RECORDS in all): a burst that the broker hands out over several fetches makes one round."""
    deadline = time.monotonic() + LINGER_MAX * linger_ms / 1000
    while (left := deadline - time.monotonic()) > 0:
        room = MAX_RECORDS - sum(len(records) for records in batches.values())
        if room <= 0:
            return
        more = await consumer.getmany(timeout_ms=max(1, round(min(left, linger_ms / 1000) * 1000)), max_records=room)
        if not more:
            return
        for tp, records in more.items():
            batches.setdefault(tp, []).extend(records)


def read_batch(
    hub: LiveHub, topic: Any, source: Source, partition: int, records: list[Any]
) -> tuple[SpanContext, list[tuple[float, int]]]:
    """Decode one partition's batch and publish its updates into the hub's round, in a span linked to the
    records' traces; returns that span's context and, per update, (event time, subscribers reached)."""
    with _tracer.start_as_current_span(
        f"{topic.name} process",
        kind=SpanKind.CONSUMER,
        links=trace_links(records, MAX_LINKS),
        attributes={"messaging.system": "kafka", "messaging.batch.message_count": len(records)},
    ) as span:
        reached: list[tuple[float, int]] = []
        for record in records:
            try:
                event = decode(topic, record.value)
            except DecodeError as exc:
                log.warning(
                    "skipped an undecodable update at %s/%d@%d: %s", topic.name, partition, record.offset, exc.reason
                )
                continue
            reached.append((event.occurred_at.timestamp(), hub.publish(source, event, partition, record.offset)))
        return span.get_span_context(), reached
