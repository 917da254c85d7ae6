"""`feature rebuild`: forget feature's state, snapshots and outcomes and recompute them from the market topics.

Run it while no feature process is up (they would keep their partitions' old state in memory). It reads every
partition of the three market topics from the beginning in this process, applies the same engine, checkpoints
state + offsets + snapshots + outcomes as the service does, and stops when it has caught up with the log; a service
started afterwards resumes from those offsets. Vectors are not re-published unless `--publish` (their ids are the
same as before, so consumers would dedupe them anyway). The topics are the source, not ingest's history: ingest
exposes no paginated export of it, and only the topics carry the very events (ids, order) the service applied; they
must still hold them (market.lifecycle.v1 keeps them forever, trades and signals for their retention). See
docs/features.md, "State, checkpoints, recovery".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from tqdm import tqdm

from om_contracts import DecodeError, Topic, decode
from om_contracts.topics import FEATURE_VECTORS
from om_feature import store
from om_feature.app import MIGRATIONS, TOPICS, engine_config
from om_feature.engine import Engine
from om_feature.processor import FeatureProcessor
from om_feature.settings import FeatureSettings
from om_feature.stream import Delivery, KafkaSink
from om_runtime.cache import create_redis
from om_runtime.db import Database


class _Discard:
    """A vector sink that publishes nothing (the default for a rebuild)."""

    async def send(self, messages: list[tuple[bytes, bytes]]) -> None:
        return None

    async def flush(self) -> None:
        return None


async def rebuild(settings: FeatureSettings, *, publish: bool = False) -> int:
    """Recompute everything from the topics; return how many events were read."""
    db = Database(settings.database_url, schema="feature", migrations=MIGRATIONS, pool_size=2)
    redis = create_redis(settings.redis_url)
    sink = KafkaSink(settings.kafka_bootstrap_servers, client_id="feature-rebuild", topic=FEATURE_VECTORS.name)
    by_name = {t.name: t for t in TOPICS}
    async with db, contextlib.aclosing(redis):
        async with db.transaction() as conn:
            await store.reset(conn)
        keys = [key async for key in redis.scan_iter(match=store.KEYS.key("market", "*"), count=1000)]
        if keys:
            await redis.delete(*keys)
        if publish:
            await sink.start()
        processor = FeatureProcessor(Engine(engine_config(settings)), db, redis, sink if publish else _Discard())
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False)
        await consumer.start()
        read = 0
        try:
            partitions = [
                TopicPartition(name, p) for name in by_name for p in sorted(consumer.partitions_for_topic(name) or ())
            ]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            await processor.on_assigned([(tp.topic, tp.partition) for tp in partitions])
            with tqdm(desc="events replayed", unit="event") as bar:
                while True:
                    batch = await consumer.getmany(timeout_ms=1000, max_records=settings.max_batch)
                    deliveries = [
                        Delivery(by_name[tp.topic], event, tp.partition, r.offset, r.timestamp, r.key)
                        for tp, records in batch.items()
                        for r in records
                        if (event := _decoded(by_name[tp.topic], r.value)) is not None
                    ]
                    read += sum(len(records) for records in batch.values())
                    bar.update(sum(len(records) for records in batch.values()))
                    if deliveries:
                        await processor.process(deliveries)
                    if not batch and await _caught_up(consumer, partitions):
                        break
            await processor.on_idle()  # what coalescing still holds: the last vector (and snapshot) of each market
            await processor.checkpoint()
        finally:
            await consumer.stop()
            if publish:
                await sink.stop()
    return read


async def _caught_up(consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> bool:
    """Every partition read to its high watermark. The watermark comes from fetch responses; ListOffsets is only a
    lower bound on the embedded broker (it answers with the last batch's base offset + 1), used for unfetched ones."""
    lower_bounds = await consumer.end_offsets(partitions)
    for tp in partitions:
        highwater = consumer.highwater(tp)
        end = lower_bounds[tp] if highwater is None else highwater
        if await consumer.position(tp) < end:
            return False
    return True


def _decoded(topic: Topic, raw: bytes) -> Any:
    try:
        return decode(topic, raw)
    except DecodeError:
        return None  # the live service dead-lettered it already


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="feature rebuild", description=__doc__)
    parser.add_argument("--publish", action="store_true", help="publish the recomputed vectors again")
    args = parser.parse_args(argv)
    read = asyncio.run(rebuild(FeatureSettings(), publish=args.publish))
    print(f"rebuilt feature state from {read:,} events; start the feature service to continue from there")
