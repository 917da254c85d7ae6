"""How the relay tells a broker that lost its log from relay loops confirming concurrently (pure, no servers)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from om_ingest.outbox import LogLost, PublishedOffsets


@dataclass
class Meta:  # the fields of aiokafka's RecordMetadata the relay reads
    topic: str
    partition: int
    offset: int


def confirmations(partition: int, offsets: range) -> list[Meta]:
    return [Meta("market.trades.v1", partition, o) for o in offsets]


def test_offsets_beyond_what_was_confirmed_before_the_send_are_a_healthy_log() -> None:
    confirmed = PublishedOffsets()
    confirmed.record(confirmations(0, range(0, 10)), confirmed.snapshot())
    confirmed.record(confirmations(0, range(10, 20)) + confirmations(1, range(0, 3)), confirmed.snapshot())
    assert confirmed.highest == {("market.trades.v1", 0): 19, ("market.trades.v1", 1): 2}


def test_loops_confirming_concurrently_are_not_taken_for_a_lost_log() -> None:
    confirmed = PublishedOffsets()
    confirmed.record(confirmations(0, range(0, 10)), confirmed.snapshot())
    first, second = confirmed.snapshot(), confirmed.snapshot()  # both loops send before either is confirmed
    confirmed.record(confirmations(0, range(20, 30)), second)  # the later send is confirmed first
    confirmed.record(confirmations(0, range(10, 20)), first)  # lower than the highest now, but not than its snapshot
    assert confirmed.highest[("market.trades.v1", 0)] == 29


def test_offsets_at_or_below_what_was_confirmed_before_mean_the_log_was_lost() -> None:
    confirmed = PublishedOffsets()
    confirmed.record(confirmations(2, range(0, 500)), confirmed.snapshot())
    before = confirmed.snapshot()
    with pytest.raises(LogLost) as lost:
        confirmed.record(confirmations(2, range(0, 40)), before)  # a restarted, empty broker numbers from 0 again
    assert lost.value.partitions == ["market.trades.v1-2"]
    assert lost.value.generation == before[0]
    assert confirmed.highest[("market.trades.v1", 2)] == 499  # not overwritten by the new log's offsets
