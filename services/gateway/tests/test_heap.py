"""The freezer keeps connections' objects out of full garbage collections, and still reclaims a closed
connection's cycles once enough have closed, with one collection per burst of closes."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref

from om_gateway.heap import Freezer


class Node:
    link: Node | None = None


async def collected(freezer: Freezer, count: int = 1) -> bool:
    """Wait (up to 20 s: a loaded machine delays the checks) for the freezer's `count`-th full collection."""
    for _ in range(400):
        if freezer.full_collections >= count:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_freezes_as_connections_grow_and_reclaims_frozen_cycles_once_closes_pause() -> None:
    gc.unfreeze()  # (whatever an earlier test froze)
    freezer = Freezer(floor=3, growth=0.5, settle_s=1.0)
    try:
        freezer.opened(2)
        assert freezer.freezes == 0 and gc.get_freeze_count() == 0
        cycle = Node()
        cycle.link = cycle  # a closed connection's objects: garbage only the cyclic collector finds
        ref = weakref.ref(cycle)
        freezer.opened(3)
        assert freezer.freezes == 1 and freezer.frozen_with == 3 and gc.get_freeze_count() > 0
        del cycle
        gc.collect()
        assert ref() is not None  # frozen: full collections skip it
        freezer.opened(5)
        assert freezer.freezes == 1  # grown by 2, less than max(3, 50 % of 3)
        freezer.opened(6)
        assert freezer.freezes == 2 and freezer.frozen_with == 6
        freezer.closed_one(5)
        freezer.closed_one(4)
        freezer.closed_one(3)  # three closed: half the most that were open (six)
        assert freezer.full_collections == 0 and ref() is not None  # not yet: while connections are closing
        for open_now in (2, 1):  # closes go on: the collection waits for them to pause
            await asyncio.sleep(0.02)
            freezer.closed_one(open_now)
            assert freezer.full_collections == 0
        assert await collected(freezer)
        assert freezer.full_collections == 1 and freezer.closed == 0 and freezer.frozen_with == 1
        assert ref() is None
        freezer.tick(1)  # a heartbeat: what survived since is frozen
        assert freezer.freezes == 3 and freezer.full_collections == 1
        freezer.full_every_s = 0
        freezer.tick(1)  # and once it is time, everything is collected
        assert freezer.full_collections == 2
    finally:
        gc.unfreeze()


async def test_one_collection_for_a_burst_of_closes() -> None:
    gc.unfreeze()
    freezer = Freezer(floor=10, settle_s=0.05, defer_s=10.0)
    try:
        freezer.opened(1000)
        for open_now in range(999, -1, -1):  # all of them, as when a client machine goes away
            freezer.closed_one(open_now)
            if open_now % 100 == 0:
                time.sleep(0.1)  # noqa: ASYNC251 - the event loop held (closes still to come): not a pause
                await asyncio.sleep(0)
        assert await collected(freezer)
        await asyncio.sleep(0.3)
        assert freezer.full_collections == 1 and freezer.collected_with == 0
        assert freezer.full_collection_s > 0 and freezer.full_collection_cpu_s > 0  # (measured, for /metrics)
    finally:
        gc.unfreeze()


async def test_closes_that_never_pause_are_collected_after_defer_s() -> None:
    gc.unfreeze()
    freezer = Freezer(floor=1, settle_s=0.5, defer_s=0.15)
    try:
        freezer.opened(4)
        for _ in range(400):  # a close every 10 ms, for up to 4 s: never a pause of settle_s
            freezer.closed_one(3)
            if freezer.full_collections:
                break
            await asyncio.sleep(0.01)
        assert freezer.full_collections == 1
    finally:
        gc.unfreeze()


def test_does_nothing_when_disabled() -> None:
    gc.unfreeze()
    freezer = Freezer(enabled=False, floor=1)
    freezer.opened(1_000_000)
    freezer.closed_one(0)
    freezer.tick(0)
    assert freezer.freezes == freezer.full_collections == 0 and gc.get_freeze_count() == 0
