"""Event-loop stall detection every service gets from `ServiceRuntime.running()`, with no code of its own.

A probe task sleeps a fixed interval and records how late it woke up (`om_event_loop_lag_seconds`): anything that
holds the loop (a long synchronous step, a garbage collection, a CPU-starved process) shows there as lag, and delays
every consumer, request and WebSocket write of the service by as much. A watchdog thread notices while the loop is
still stuck and captures the loop thread's stack at that moment, so the warning logged for a stall over the
threshold names what was running rather than only how long it took.

For a finer diagnosis, `OM_EVENT_LOOP_SLOW_CALLBACK_MS` turns on asyncio's debug mode, which logs each callback or
task step that ran longer (asyncio's debug mode costs CPU on every task switch: for diagnosis only).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import threading
import time
import traceback
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram

log = logging.getLogger(__name__)

#: Lag buckets in seconds: from a normal wake-up (under a millisecond) to a stall that times out clients.
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass(frozen=True)
class LoopWatchSettings:
    interval_s: float = 0.05
    stall_s: float = 0.25
    slow_callback_s: float | None = None
    #: At most one stall warning (with its stack) per this many seconds; the stalls in between are counted in
    #: `om_event_loop_stalls_total` and summed up in the next warning. 0: every stall is logged.
    warn_interval_s: float = 30.0


class _GcClock:
    """Seconds spent in garbage collection since the last `take()`, to tell a collection from a slow step."""

    def __init__(self) -> None:
        self._started = 0.0
        self._spent = 0.0
        self._collections = 0
        self._oldest = -1  # the oldest generation collected

    def callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started:
            self._spent += time.perf_counter() - self._started
            self._collections += 1
            self._oldest = max(self._oldest, info.get("generation", 0))
            self._started = 0.0

    def take(self) -> tuple[float, int, int]:
        spent, count, oldest = self._spent, self._collections, self._oldest
        self._spent, self._collections, self._oldest = 0.0, 0, -1
        return spent, count, oldest


class LoopWatch:
    """The probe (a task on the loop) and the watchdog (a thread) for one running service."""

    def __init__(self, registry: CollectorRegistry, service: str, settings: LoopWatchSettings | None = None) -> None:
        self.service = service
        self.settings = settings or LoopWatchSettings()
        self.lag = Histogram(
            "om_event_loop_lag_seconds",
            "How late the event loop woke a task sleeping a fixed interval: time the loop was held by other work",
            ["app_name"],
            buckets=LAG_BUCKETS,
            registry=registry,
        ).labels(service)
        self.stalls = Counter(
            "om_event_loop_stalls",
            "Event-loop stalls longer than the warning threshold",
            ["app_name"],
            registry=registry,
        ).labels(service)
        self._gc = _GcClock()
        self._beat = time.monotonic()
        self._loop_thread = threading.get_ident()
        self._captured: str | None = None  # the loop thread's stack while the current stall was going on
        self._warned_at: float | None = None  # monotonic time of the last warning logged
        self._unlogged = 0  # stalls since then that were counted but not logged
        self._unlogged_longest_s = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    async def run(self) -> None:
        """The probe: loops until cancelled (starts and stops the watchdog thread with it)."""
        loop = asyncio.get_running_loop()
        if self.settings.slow_callback_s is not None:
            loop.set_debug(True)
            loop.slow_callback_duration = self.settings.slow_callback_s
        self._loop_thread = threading.get_ident()
        self._beat = time.monotonic()
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name=f"{self.service}-loopwatch", daemon=True)
        self._thread.start()
        gc.callbacks.append(self._gc.callback)
        try:
            interval = self.settings.interval_s
            while True:
                before = time.monotonic()
                await asyncio.sleep(interval)
                self._beat = now = time.monotonic()
                self.observe(now - before - interval)
        finally:
            gc.callbacks.remove(self._gc.callback)
            self._stop.set()
            self._thread.join(timeout=1.0)

    def observe(self, lag_s: float) -> None:
        lag_s = max(0.0, lag_s)
        self.lag.observe(lag_s)
        gc_s, collections, oldest = self._gc.take()
        stack, self._captured = self._captured, None
        if lag_s < self.settings.stall_s:
            return
        self.stalls.inc()
        if not self._warning_due():
            # A busy process can stall every few seconds: one long warning per interval, the rest summed up in it.
            self._unlogged += 1
            self._unlogged_longest_s = max(self._unlogged_longest_s, lag_s)
            return
        self._warned_at = time.monotonic()
        unlogged = (
            f"; {self._unlogged} more stall(s) since the previous warning, not logged (longest "
            f"{self._unlogged_longest_s * 1000:.0f} ms)"
            if self._unlogged
            else ""
        )
        self._unlogged, self._unlogged_longest_s = 0, 0.0
        log.warning(
            "%s: event loop stalled %.0f ms (garbage collection %.0f ms in %d run(s) meanwhile, oldest "
            "generation %d; %d objects frozen out of collection)%s; the loop thread was in:\n%s",
            self.service,
            lag_s * 1000,
            gc_s * 1000,
            collections,
            oldest,
            gc.get_freeze_count(),
            unlogged,
            stack or "(not caught: the stall held the GIL throughout, e.g. one long C call or a collection)",
        )

    def _warning_due(self) -> bool:
        warned_at = self._warned_at
        return warned_at is None or time.monotonic() - warned_at >= self.settings.warn_interval_s

    def _watch(self) -> None:
        """The watchdog: while the probe is overdue by more than the threshold, capture once what the loop runs."""
        check = min(self.settings.interval_s, self.settings.stall_s / 2)
        deadline = self.settings.interval_s + self.settings.stall_s / 2
        while not self._stop.wait(check):
            beat = self._beat
            # (No stack to capture for a stall whose warning the interval would suppress.)
            if self._captured is None and time.monotonic() - beat > deadline and self._warning_due():
                frame = sys._current_frames().get(self._loop_thread)
                if frame is not None and self._beat == beat:  # still the same stall
                    self._captured = "".join(traceback.format_stack(frame, limit=16))
