"""What every service gets from the runtime for its event loop: the lag probe (a deliberate stall is measured,
counted and named in the log) and the start-up heap frozen out of garbage collection."""

from __future__ import annotations

import asyncio
import gc
import logging
import time

import httpx
import pytest
from prometheus_client import CollectorRegistry

from om_runtime.loopwatch import LoopWatch, LoopWatchSettings
from om_runtime.service import ServiceRuntime
from om_runtime.settings import ServiceSettings


def hold_the_loop_in_a_slow_step(seconds: float) -> None:
    time.sleep(seconds)  # what a long synchronous step in a handler does to every other task


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return value if value is not None else 0.0


async def test_a_stall_is_recorded_counted_and_logged_with_what_held_the_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = CollectorRegistry()
    watch = LoopWatch(registry, "svc", LoopWatchSettings(interval_s=0.02, stall_s=0.2))
    probe = asyncio.create_task(watch.run())
    try:
        await asyncio.sleep(0.1)  # some normal wake-ups first
        with caplog.at_level(logging.WARNING, logger="om_runtime.loopwatch"):
            hold_the_loop_in_a_slow_step(0.6)
            await asyncio.sleep(0.1)  # the probe wakes, late
    finally:
        probe.cancel()
        await asyncio.gather(probe, return_exceptions=True)

    wakeups = sample(registry, "om_event_loop_lag_seconds_count", app_name="svc")
    under_quarter_s = sample(registry, "om_event_loop_lag_seconds_bucket", app_name="svc", le="0.25")
    assert wakeups >= 3
    assert wakeups - under_quarter_s >= 1  # the stall landed above 250 ms
    assert sample(registry, "om_event_loop_stalls_total", app_name="svc") == 1
    [warning] = [r for r in caplog.records if "event loop stalled" in r.getMessage()]
    assert "hold_the_loop_in_a_slow_step" in warning.getMessage()


async def test_short_waits_are_not_stalls(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    watch = LoopWatch(registry, "svc", LoopWatchSettings(interval_s=0.01, stall_s=0.5))
    probe = asyncio.create_task(watch.run())
    with caplog.at_level(logging.WARNING, logger="om_runtime.loopwatch"):
        await asyncio.sleep(0.2)
    probe.cancel()
    await asyncio.gather(probe, return_exceptions=True)
    assert sample(registry, "om_event_loop_lag_seconds_count", app_name="svc") >= 5
    assert sample(registry, "om_event_loop_stalls_total", app_name="svc") == 0
    assert not [r for r in caplog.records if "event loop stalled" in r.getMessage()]
    assert watch._thread is not None and not watch._thread.is_alive()  # the watchdog stops with the probe


async def test_every_service_runtime_serves_the_lag_series_without_code_of_its_own() -> None:
    runtime = ServiceRuntime(ServiceSettings(service_name="svc"), kafka_required=False)
    app = runtime.create_app(title="svc")
    async with runtime.running():
        await asyncio.sleep(0.2)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            metrics = (await client.get("/metrics")).text
    count = next(
        float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("om_event_loop_lag_seconds_count")
    )
    assert count >= 1


async def test_a_started_service_freezes_its_start_up_heap_and_unfreezes_it_when_it_stops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OM_GC_FREEZE", "1")
    runtime = ServiceRuntime(ServiceSettings(service_name="svc"), kafka_required=False)
    runtime.create_app(title="svc")
    gc.unfreeze()
    async with runtime.running():
        # Later full collections skip the app, the imported modules and the schemas.
        assert gc.get_freeze_count() > 10_000
    assert gc.get_freeze_count() == 0


async def test_freezing_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OM_GC_FREEZE", "0")
    runtime = ServiceRuntime(ServiceSettings(service_name="svc"), kafka_required=False)
    gc.unfreeze()
    async with runtime.running():
        assert gc.get_freeze_count() == 0


async def test_stall_warnings_are_rate_limited_and_the_next_one_counts_the_unlogged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = CollectorRegistry()
    watch = LoopWatch(registry, "svc", LoopWatchSettings(stall_s=0.25, warn_interval_s=0.3))
    with caplog.at_level(logging.WARNING, logger="om_runtime.loopwatch"):
        for lag_s in (0.3, 0.4, 0.7, 0.5):  # one warning, three stalls within its interval
            watch.observe(lag_s)
        await asyncio.sleep(0.35)
        watch.observe(0.26)
    warnings = [r.getMessage() for r in caplog.records if "event loop stalled" in r.getMessage()]
    assert len(warnings) == 2
    assert "stalled 300 ms" in warnings[0] and "not logged" not in warnings[0]
    assert "stalled 260 ms" in warnings[1]
    assert "3 more stall(s) since the previous warning, not logged (longest 700 ms)" in warnings[1]
    assert sample(registry, "om_event_loop_stalls_total", app_name="svc") == 5  # every stall counted


def test_the_warning_interval_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OM_EVENT_LOOP_WARN_INTERVAL_S", "5")
    runtime = ServiceRuntime(ServiceSettings(service_name="svc"))
    assert runtime.loop_watch.settings.warn_interval_s == 5.0
