"""Reads the update topics into the hub. Every replica reads every partition itself (no consumer group), from
`ws_history_s` ago, so its channel histories and sequence numbers (record offsets) match every other replica's.

Traced like the other consumers, one span per fetched batch (`<topic> process`, linked to each record's trace),
and inside it one `<topic> websocket send` span for the batch's fan-out: the sends to every subscriber happen in
it (or are queued in it for a busy socket), so a walk from a trade's HTTP request reaches the push. Per batch,
not per client: its cost does not grow with the number of clients."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import Histogram

from om_contracts import DecodeError, decode
from om_contracts.topics import TOPICS
from om_gateway.live import SOURCES, LiveHub, Source

log = logging.getLogger(__name__)
_tracer = trace.get_tracer("om_gateway.feed")
_propagator = TraceContextTextMapPropagator()
#: Links from a batch span to its records' traces, at most (as om_runtime.consumer).
MAX_LINKS = 128


def active_sources() -> dict[str, Source]:
    """The sources whose topic is in the registry (user and health topics join once analytics adds them)."""
    known = {t.name for t in TOPICS}
    return {s.topic: s for s in SOURCES if s.topic in known}


async def follow(
    hub: LiveHub, bootstrap: str, history_s: float, fetch_max_wait_ms: int = 10, lag: Histogram | None = None
) -> None:
    """Read forever; `lag` observes event time → handed to the clients' queues, for live updates."""
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
            batches = await consumer.getmany(timeout_ms=1000, max_records=2000)
            for tp, records in batches.items():
                fan_out(hub, topics[tp.topic], sources[tp.topic], tp.partition, records, lag)
    finally:
        with contextlib.suppress(Exception):
            await starting
        await consumer.stop()


def fan_out(
    hub: LiveHub, topic: Any, source: Source, partition: int, records: list[Any], lag: Histogram | None
) -> None:
    """Decode one partition's batch and push its updates to the subscribers, in one traced batch."""
    with _tracer.start_as_current_span(
        f"{topic.name} process",
        kind=SpanKind.CONSUMER,
        links=_links(records),
        attributes={"messaging.system": "kafka", "messaging.batch.message_count": len(records)},
    ):
        events = []
        for record in records:
            try:
                events.append((record.offset, decode(topic, record.value)))
            except DecodeError as exc:
                log.warning(
                    "skipped an undecodable update at %s/%d@%d: %s", topic.name, partition, record.offset, exc.reason
                )
        with _tracer.start_as_current_span(f"{topic.name} websocket send") as span:
            deliveries = 0
            for offset, event in events:
                deliveries += hub.publish(source, event, partition, offset)
                if lag is not None and (behind := time.time() - event.occurred_at.timestamp()) < 60:
                    lag.observe(behind)  # (not the history read at start)
            span.set_attribute("om.websocket.updates", len(events))
            span.set_attribute("om.websocket.deliveries", deliveries)


def _links(records: list[Any]) -> list[Link]:
    links = []
    for record in records[:MAX_LINKS]:
        carrier = {k: v.decode(errors="replace") for k, v in record.headers or () if k == "traceparent"}
        if carrier:
            context = trace.get_current_span(_propagator.extract(carrier)).get_span_context()
            if context.is_valid:
                links.append(Link(context))
    return links
