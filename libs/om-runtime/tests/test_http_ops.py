"""om_runtime.http.ops_router in-process: /health, /ready (every check, a failing one, a hanging one), /metrics."""

from __future__ import annotations

import asyncio
import types
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter

from om_runtime import http
from om_runtime.http import Check, ops_router


def client_for(checks: dict[str, Check], registry: CollectorRegistry | None = None) -> httpx.AsyncClient:
    app = FastAPI()
    app.include_router(ops_router(checks, registry or CollectorRegistry()))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service")


async def ok() -> None:
    return None


async def refused() -> None:
    raise ConnectionRefusedError("postgres at 127.0.0.1:5432 refused")


@pytest.fixture
def short_timeout(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Run /ready's checks with a 50 ms timeout instead of 2 s; record the timeout the router asked for."""
    asked: list[float] = []

    async def wait_for(aw: Awaitable[Any], timeout: float) -> Any:  # noqa: ASYNC109 (asyncio.wait_for's signature)
        asked.append(timeout)
        return await asyncio.wait_for(aw, 0.05)

    fake = types.SimpleNamespace(wait_for=wait_for, gather=asyncio.gather)
    monkeypatch.setattr(http, "asyncio", fake)
    return asked


async def test_health_is_ok_without_running_checks() -> None:
    async def never_called() -> None:
        raise AssertionError("/health must not run readiness checks")

    async with client_for({"db": never_called}) as client:
        response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_when_every_check_passes() -> None:
    async def returns_something() -> bool:
        return True  # a check's result is ignored; only raising counts

    async with client_for({"kafka": ok, "db": returns_something}) as client:
        response = await client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"kafka": "ok", "db": "ok"}}


async def test_ready_with_no_checks() -> None:
    async with client_for({}) as client:
        response = await client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {}}


async def test_not_ready_when_a_check_raises() -> None:
    async with client_for({"kafka": ok, "db": refused}) as client:
        response = await client.get("/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready"
    assert body["checks"]["kafka"] == "ok"
    assert body["checks"]["db"] == "failed: ConnectionRefusedError: postgres at 127.0.0.1:5432 refused"


async def test_not_ready_when_a_check_hangs_past_the_timeout(short_timeout: list[float]) -> None:
    cancelled = asyncio.Event()

    async def hangs() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with client_for({"kafka": ok, "redis": hangs}) as client:
        response = await asyncio.wait_for(client.get("/ready"), 1.0)
    assert response.status_code == 503
    assert response.json() == {
        "status": "not ready",
        "checks": {"kafka": "ok", "redis": "failed: TimeoutError: "},
    }
    assert short_timeout == [2.0, 2.0]  # every check is bounded by the router's 2 s
    assert cancelled.is_set()  # the hanging check was cancelled, not left running


async def test_checks_run_concurrently(short_timeout: list[float]) -> None:
    started: list[str] = []
    both = asyncio.Event()

    def waits_for_the_other(name: str) -> Callable[[], Awaitable[None]]:
        async def check() -> None:
            started.append(name)
            if len(started) == 2:
                both.set()
            await both.wait()  # deadlocks (and times out) if the checks ran one after another

        return check

    async with client_for({"a": waits_for_the_other("a"), "b": waits_for_the_other("b")}) as client:
        response = await client.get("/ready")
    assert response.status_code == 200, response.json()


async def test_metrics_expose_the_given_registry() -> None:
    registry = CollectorRegistry()
    counter = Counter("om_test_things", "Things counted by the test.", registry=registry)
    counter.inc(3)

    async with client_for({}, registry) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    assert "# HELP om_test_things_total Things counted by the test." in response.text
    assert "om_test_things_total 3.0" in response.text


async def test_metrics_do_not_leak_the_global_registry() -> None:
    async with client_for({}, CollectorRegistry()) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert "python_gc_objects_collected_total" not in response.text  # a default-registry collector
