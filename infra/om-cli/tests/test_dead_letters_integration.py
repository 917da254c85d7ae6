"""`om dead-letters` against a real broker: list with filters (each letter once), replay the original bytes and
key to the original topic."""

from __future__ import annotations

import argparse
import base64
import uuid

import pytest

from om_cli import dead_letters
from om_cli.testing import consume_until, produce
from om_contracts import DeadLetter, encode, utcnow
from om_contracts.topics import DEAD_LETTERS, MARKET_TRADES
from om_runtime.kafka import ensure_topics

pytestmark = pytest.mark.integration


def letter(consumer: str, payload: bytes, reason: str) -> DeadLetter:
    return DeadLetter(
        event_id=uuid.uuid4(),
        occurred_at=utcnow(),
        producer=consumer,
        consumer=consumer,
        original_topic=MARKET_TRADES.name,
        original_partition=1,
        original_offset=7,
        original_key="m1",
        reason=reason,
        payload_base64=base64.b64encode(payload).decode(),
    )


async def test_list_filters_and_replay_republishes_the_original_bytes(kafka_bootstrap: str, capsys: object) -> None:
    await ensure_topics(kafka_bootstrap)
    analytics = letter("analytics", b'{"trade": 1}', "KeyError: market m1")
    feature = letter("feature", b'{"trade": 2}', "ValueError: NaN")
    # the same letter twice (a redelivered batch dead-letters again under the same id)
    await produce(kafka_bootstrap, DEAD_LETTERS.name, [encode(analytics), encode(feature), encode(analytics)], key=b"k")

    everything = await dead_letters.read_dead_letters(kafka_bootstrap)
    assert [d.event_id for d in everything] == [analytics.event_id, feature.event_id]
    only = await dead_letters.read_dead_letters(kafka_bootstrap, dead_letters.Filters(consumer="feature"))
    assert only == [feature]
    assert await dead_letters.read_dead_letters(kafka_bootstrap, dead_letters.Filters(reason="NaN")) == [feature]

    args = argparse.Namespace(
        action="replay",
        bootstrap=kafka_bootstrap,
        consumer="analytics",
        topic=None,
        reason=None,
        ids=None,
        limit=None,
        dry_run=False,
    )
    assert await dead_letters.run(args) == 0
    assert "replayed 1 dead letter(s)" in capsys.readouterr().out  # type: ignore[attr-defined]
    [replayed] = await consume_until(kafka_bootstrap, MARKET_TRADES.name, lambda m: len(m) >= 1)
    assert replayed == {"trade": 1}
