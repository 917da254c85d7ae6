"""`om dead-letters list | replay`: see what consumers set aside, and send it back once the cause is fixed.

A dead letter keeps the original bytes, key, topic and the reason. Replaying publishes those bytes again to the
original topic with the original key: the event keeps its `event_id`, so a consumer that applied it meanwhile (or
a second replay) changes nothing — consumers remember applied ids for their dedupe window (24 h by default).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from om_contracts import DeadLetter, DecodeError, decode
from om_contracts.topics import DEAD_LETTERS


def default_bootstrap() -> str:
    return os.environ.get("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{os.environ.get('OM_KAFKA_PORT', '9092')}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    for name, help_text in (
        ("list", "print the dead letters (oldest first)"),
        ("replay", "re-publish dead letters' original bytes to their original topics"),
    ):
        action = actions.add_parser(name, help=help_text)
        action.add_argument("--bootstrap", default=default_bootstrap(), help="Kafka (default $KAFKA_BOOTSTRAP_SERVERS)")
        action.add_argument("--consumer", help="only letters set aside by this consumer (e.g. analytics)")
        action.add_argument("--topic", help="only letters from this original topic")
        action.add_argument("--reason", help="only letters whose reason contains this text")
        action.add_argument("--id", action="append", dest="ids", help="only this dead letter id (repeatable)")
        action.add_argument("--limit", type=int, default=None, help="at most this many (newest kept)")
        if name == "list":
            action.add_argument("--json", action="store_true", help="one JSON object per line")
        else:
            action.add_argument("--dry-run", action="store_true", help="say what would be replayed, send nothing")
        action.set_defaults(run=lambda args: asyncio.run(run(args)))


@dataclass(frozen=True)
class Filters:
    consumer: str | None = None
    topic: str | None = None
    reason: str | None = None
    ids: frozenset[str] = frozenset()

    def match(self, letter: DeadLetter) -> bool:
        return (
            (self.consumer is None or letter.consumer == self.consumer)
            and (self.topic is None or letter.original_topic == self.topic)
            and (self.reason is None or self.reason in letter.reason)
            and (not self.ids or str(letter.event_id) in self.ids)
        )


async def read_dead_letters(bootstrap: str, filters: Filters = Filters()) -> list[DeadLetter]:
    """Every dead letter currently in the topic that matches, oldest first; the same letter (same id) once."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50)
    await consumer.start()
    try:
        await consumer.topics()
        tps = [TopicPartition(DEAD_LETTERS.name, p) for p in consumer.partitions_for_topic(DEAD_LETTERS.name) or ()]
        if not tps:
            return []
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        letters: dict[str, DeadLetter] = {}
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    try:
                        letter = decode(DEAD_LETTERS, record.value or b"")
                    except DecodeError:
                        continue  # not ours to judge; the topic only ever carries DeadLetter
                    if filters.match(letter):
                        letters.setdefault(str(letter.event_id), letter)
        return sorted(letters.values(), key=lambda d: d.occurred_at)
    finally:
        await consumer.stop()


async def replay(bootstrap: str, letters: list[DeadLetter]) -> int:
    """Publish each letter's original bytes to its original topic, with its key; return how many were sent."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, acks="all", linger_ms=5)
    await producer.start()
    try:
        sends = [
            await producer.send(
                letter.original_topic,
                base64.b64decode(letter.payload_base64),
                key=letter.original_key.encode() if letter.original_key is not None else None,
                headers=[("om-replayed-from", str(letter.event_id).encode())],
            )
            for letter in letters
        ]
        await asyncio.gather(*sends)
        return len(sends)
    finally:
        await producer.stop()


def summary(letter: DeadLetter) -> dict[str, Any]:
    return {
        "id": str(letter.event_id),
        "at": letter.occurred_at.isoformat(timespec="seconds"),
        "consumer": letter.consumer,
        "from": f"{letter.original_topic}[{letter.original_partition}]@{letter.original_offset}",
        "key": letter.original_key,
        "reason": letter.reason,
    }


async def run(args: argparse.Namespace) -> int:
    filters = Filters(args.consumer, args.topic, args.reason, frozenset(args.ids or ()))
    letters = await read_dead_letters(args.bootstrap, filters)
    if args.limit is not None:
        letters = letters[-args.limit :]
    if args.action == "list":
        for letter in letters:
            row = summary(letter)
            if args.json:
                print(json.dumps(row))
            else:
                print(f"{row['at']}  {row['id']}  {row['consumer']:<10} {row['from']:<32} {row['reason'][:160]}")
        if not args.json:
            print(f"{len(letters)} dead letter(s)")
        return 0
    if args.dry_run:
        for letter in letters:
            print(f"would replay {letter.event_id} to {letter.original_topic} (key {letter.original_key})")
        return 0
    sent = await replay(args.bootstrap, letters)
    print(f"replayed {sent} dead letter(s) to their original topics")
    return 0
