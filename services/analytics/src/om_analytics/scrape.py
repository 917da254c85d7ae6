"""The I/O side of platform health: read each service's `/metrics`, and consumer lag from Kafka's committed
group offsets (a group whose offsets live elsewhere reports no lag here)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from om_analytics.health import Scrape, parse
from om_contracts import ConsumerLag

log = logging.getLogger(__name__)


async def scrape(client: httpx.AsyncClient, url: str) -> tuple[Scrape | None, str | None]:
    """One service's metrics, or why they could not be read."""
    try:
        reply = await client.get(url.rstrip("/") + "/metrics")
        reply.raise_for_status()
        return parse(reply.text, time.monotonic()), None
    except (httpx.HTTPError, ValueError) as exc:
        return None, f"{type(exc).__name__}: {exc}"[:300]


async def consumer_lag(bootstrap: str, groups: list[str], timeout_s: float = 5.0) -> dict[str, list[ConsumerLag]]:
    """Per group: log end offset minus committed offset, per topic partition. Empty on any Kafka error."""
    try:
        return await asyncio.wait_for(_lag(bootstrap, groups), timeout_s)
    except Exception as exc:  # health reporting must never take the service down
        log.warning("could not read consumer lag: %r", exc)
        return {}


async def _lag(bootstrap: str, groups: list[str]) -> dict[str, list[ConsumerLag]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await admin.start()
    try:
        committed: dict[str, dict[TopicPartition, int]] = {}
        for group in groups:
            offsets = await admin.list_consumer_group_offsets(group)
            committed[group] = {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
        await consumer.start()
        partitions = {tp for offsets in committed.values() for tp in offsets}
        ends = await consumer.end_offsets(list(partitions)) if partitions else {}
        return {
            group: [
                ConsumerLag(group=group, topic=tp.topic, partition=tp.partition, lag=max(0, ends[tp] - offset))
                for tp, offset in sorted(offsets.items())
            ]
            for group, offsets in committed.items()
        }
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
        await admin.close()
