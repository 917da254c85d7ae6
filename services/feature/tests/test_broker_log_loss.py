"""feature under a broker that restarts empty (the embedded broker keeps its log in memory) while it runs, then is
given the events again with new offsets, as ingest's outbox relay does: the events feature had applied (however old)
change nothing, the ones it had never read (however old) are applied, and the final state equals one replay."""

from __future__ import annotations

import json
import pickle  # nosec B403  # the checkpoints the service under test wrote
import re
from collections import Counter
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from om_cli.embedded import EmbeddedKafka, free_port
from om_cli.testing import app_client, eventually
from om_contracts import decode
from om_contracts.topics import topic
from om_feature import synthetic
from om_feature.app import create_app
from om_feature.engine import Engine
from om_feature.features import MarketState
from om_feature.settings import FeatureSettings
from om_feature.synthetic import StreamSpec
from om_runtime.kafka import ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

Message = tuple[str, bytes, bytes]


def checkpointed_offsets(database_url: str) -> dict[tuple[str, int], int]:
    try:
        with psycopg.connect(database_url) as conn:
            conn.execute(sql.SQL("SET search_path = feature"))
            rows = conn.execute("SELECT topic, partition, next_offset FROM checkpoint_offsets").fetchall()
    except psycopg.errors.UndefinedTable:
        return {}
    return {(t, p): o for t, p, o in rows}


def saved_states(database_url: str) -> dict[str, MarketState]:
    with psycopg.connect(database_url) as conn:
        conn.execute(sql.SQL("SET search_path = feature"))
        rows = conn.execute("SELECT market_id, state FROM market_checkpoint").fetchall()
    return {market: pickle.loads(state) for market, state in rows}  # nosec B301


def replay(messages: list[Message]) -> dict[str, tuple]:
    """One in-process pass over everything the broker was given, in order (duplicates included): the reference."""
    engine = Engine()
    engine.process((decode(topic(t), v), 0, None) for t, _, v in messages)
    return {m: s.semantic() for m, s in engine.markets.items()}


def regressions(metrics: str) -> int:
    return sum(
        int(float(n))
        for n in re.findall(r'^om_consumer_offset_regressions_total\{consumer="feature".*\} (\S+)$', metrics, re.M)
    )


async def test_a_broker_that_loses_its_log_under_feature_and_gets_the_events_again_equals_one_replay(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    # 1,200 trades over 20 markets, 2 s of event time apart (40 minutes in all, the grace period is 5): replayed
    # events are far older than the grace period.
    spec = StreamSpec(markets=20, trades=1_200, users=50, spacing_ms=2_000.0)
    messages = list(synthetic.stream(spec))
    creations, trades = messages[: spec.markets], messages[spec.markets :]
    # Every 10th of the first 600 trades reached the broker but feature never read it before the log was lost.
    unread = {i for i in range(0, 600, 10)}
    before_loss = creations + [t for i, t in enumerate(trades[:900]) if i not in unread]
    # What the relay publishes again (its retention window: the creations, trades 300..899 and the unread ones, in
    # publishing order), followed by the trades that come after the loss.
    again = creations + [t for i, t in enumerate(trades[:900]) if i >= 300 or i in unread] + trades[900:]

    kafka = EmbeddedKafka("kafka", free_port(), tmp_path / "kafka")
    kafka.start()
    try:
        await synthetic.produce(kafka.url, before_loss)
        settings = FeatureSettings(
            KAFKA_BOOTSTRAP_SERVERS=kafka.url,
            DATABASE_URL=database_url,
            REDIS_URL=redis_url,
            checkpoint_interval_s=0.2,
            max_batch=100,
        )
        async with app_client(create_app(settings)) as client:

            async def all_checkpointed() -> None:
                assert sum(checkpointed_offsets(database_url).values()) == len(before_loss)

            await eventually(all_checkpointed, timeout_s=120)
            used = sum(1 for o in checkpointed_offsets(database_url).values() if o > 0)
            kafka.stop()
            kafka.start()  # empty: the in-memory log is gone
            # As the relay does before publishing again. (feature's own clients may have re-created them first,
            # with the broker's default partition count: the dedupe ids follow the market's state, not the
            # partition an event arrives on.)
            await ensure_topics(kafka.url)

            async def every_partition_noticed() -> None:  # feature fetched the new, empty log at its old positions
                assert regressions((await client.get("/metrics")).text) >= used

            await eventually(every_partition_noticed, timeout_s=90)
            await synthetic.produce(kafka.url, again)

            expected = Counter(json.loads(v)["market_id"] for _, _, v in trades)

            async def every_trade_once() -> None:
                for market, n in expected.items():
                    reply = await client.get(f"/v1/markets/{market}/features")
                    assert reply.status_code == 200 and reply.json()["features"]["trade_count"] == n, market

            await eventually(every_trade_once, timeout_s=120)
        # (leaving stopped the service after a last checkpoint)
        states = saved_states(database_url)
        assert {m: s.trade_count for m, s in states.items()} == expected  # nothing lost, nothing doubled
        assert {m: s.semantic() for m, s in states.items()} == replay(before_loss + again)
    finally:
        kafka.stop()
