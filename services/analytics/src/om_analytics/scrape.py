"""The I/O side of platform health: read each service's `/metrics`, and consumer lag from Kafka's committed
group offsets (a group whose offsets live elsewhere reports no lag here)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

from om_analytics.health import Scrape, parse
from om_contracts import TOPICS, ConsumerLag

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
    # Through a consumer's OffsetFetch (what every consumer uses), not the admin API, which the embedded
    # broker does not fully speak. The registry says which topics each group consumes.
    result: dict[str, list[ConsumerLag]] = {}
    for group in groups:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
        try:
            await consumer.start()  # inside the try: a shutdown cancelling start() must still stop the consumer
            await consumer.topics()  # load metadata, so partitions are known
            partitions = [
                TopicPartition(t.name, p)
                for t in TOPICS
                if group in t.consumers
                for p in sorted(consumer.partitions_for_topic(t.name) or ())
            ]
            ends = await consumer.end_offsets(partitions) if partitions else {}
            lags = []
            for tp in partitions:
                committed = await consumer.committed(tp)
                if committed is not None:
                    lags.append(ConsumerLag(group=group, topic=tp.topic, partition=tp.partition,
                                            lag=max(0, ends[tp] - committed)))  # fmt: skip
            result[group] = lags
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()
    return result
