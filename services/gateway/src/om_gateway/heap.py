"""Keeps Python's cyclic garbage collector from re-walking every WebSocket connection's objects.

Each open connection holds about 170 objects the collector tracks (uvicorn's protocol and its parser, the
endpoint's tasks, the hub's client). At 10,000 connections a full collection walks about 1.7 million of them and
holds the event loop for 0.3-0.8 s of CPU, and every update in flight waits for it (it was the p99 of
`make bench-ws`). So the young generations are collected and everything left is frozen (`gc.freeze()`: later
collections skip it, reference counting still frees it as usual) whenever the open connections have grown by a
tenth (at least `floor`) and at every heartbeat. Only cycles among frozen objects (a closed connection's) are
then left for later: once as many connections have closed as half the most that were open since the last full
collection, or `full_every_s` after it, everything is unfrozen, collected once (that one pause) and frozen again.

The collection for closes is deferred until they pause (`settle_s` without one while the event loop was free to
handle them: a stall of the loop is not a pause; at most `defer_s` after it was due), so a burst of closes costs one
collection. Collected at once, 10,000 clients leaving together set off one full collection after every few hundred
closes (the threshold halved as the connections went), each walking the whole unfrozen heap: 39 collections held
the event loop for 6-8 s.
"""

from __future__ import annotations

import asyncio
import gc
import time

#: A check of the pause that runs this much later than planned saw a stalled event loop, not a pause in closes.
LATE_S = 0.25


class Freezer:
    def __init__(
        self,
        enabled: bool = True,
        full_every_s: float = 600.0,
        floor: int = 100,
        growth: float = 0.1,
        settle_s: float = 1.0,
        defer_s: float = 60.0,
    ) -> None:
        self.enabled = enabled
        self.full_every_s = full_every_s
        self.floor = floor
        self.growth = growth
        self.settle_s = settle_s
        self.defer_s = defer_s
        self.frozen_with = 0  # open connections at the last freeze
        self.collected_with = 0  # open connections at the last full collection
        self.peak = 0  # the most open since then
        self.closed = 0  # connections closed since then
        self.open = 0  # open connections, as last told
        self.collected_at = time.monotonic()
        self.due_since: float | None = None  # when enough had closed for a collection, until it runs
        self.quiet_s = 0.0  # how long no connection has closed, the event loop running meanwhile
        self.seen = 0  # `closed` at the last check
        self.freezes = 0
        self.full_collections = 0
        self.full_collection_s = 0.0  # time spent in them, in all
        self.full_collection_cpu_s = 0.0  # ...of which the event loop's thread had the CPU (the rest: waiting for it)

    def opened(self, open_now: int) -> None:
        self.open = open_now
        self.peak = max(self.peak, open_now)
        if self.enabled and open_now - self.frozen_with >= max(self.floor, self.growth * self.frozen_with):
            self.freeze(open_now)

    def closed_one(self, open_now: int) -> None:
        """Count a close; once enough have closed, collect when the closes pause (on the running event loop)."""
        self.open = open_now
        if not self.enabled:
            return
        self.closed += 1
        if self.due_since is None and self.closed >= max(self.floor, self.peak / 2):
            self.due_since = now = time.monotonic()
            self.quiet_s, self.seen = 0.0, self.closed
            asyncio.get_running_loop().call_later(self.settle_s / 10, self._check, now + self.settle_s / 10)

    def _check(self, planned: float) -> None:
        """Ten times per `settle_s` while a collection is due: collect once no connection closed for `settle_s`
        (or it is `defer_s` overdue). One timer per burst, not one per close."""
        if self.due_since is None:  # collected meanwhile (a heartbeat's tick)
            return
        now = time.monotonic()
        if self.closed != self.seen or now - planned > LATE_S:  # closing, or the loop was held: not a pause
            self.quiet_s, self.seen = 0.0, self.closed
        else:
            self.quiet_s += self.settle_s / 10
        if self.quiet_s >= self.settle_s or now - self.due_since >= self.defer_s:
            self.collect(self.open)
        else:
            asyncio.get_running_loop().call_later(self.settle_s / 10, self._check, now + self.settle_s / 10)

    def tick(self, open_now: int) -> None:
        """At every heartbeat: freeze what has survived since, or collect everything once it is time."""
        self.open = open_now
        if not self.enabled:
            return
        if time.monotonic() - self.collected_at >= self.full_every_s:
            self.collect(open_now)
        else:
            self.freeze(open_now)

    def freeze(self, open_now: int) -> None:
        gc.collect(1)  # (young garbage is not frozen)
        gc.freeze()
        self.frozen_with = open_now
        self.freezes += 1

    def collect(self, open_now: int) -> None:
        started, cpu = time.perf_counter(), time.thread_time()
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self.full_collection_s += time.perf_counter() - started
        self.full_collection_cpu_s += time.thread_time() - cpu
        self.frozen_with = self.collected_with = self.peak = open_now
        self.closed = 0
        self.due_since = None
        self.collected_at = time.monotonic()
        self.full_collections += 1
