"""The whole pipeline with every service as its own process, over real Kafka, PostgreSQL and Redis:
an HTTP trade through the gateway comes back as an `analytics_update` on a WebSocket, with the right numbers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from om_cli.credentials import auth_headers
from om_cli.embedded import free_port
from om_cli.platform import Platform, ServicePorts
from om_cli.testing import eventually

pytestmark = pytest.mark.e2e


def run_platform(infra_env: dict[str, str], log_dir: Path) -> Iterator[Platform]:
    ports = ServicePorts(*(free_port() for _ in range(5)))
    # Publish system metrics promptly so the test sees updates quickly.
    extra = {"ANALYTICS_SYSTEM_INTERVAL_S": "0.2"}
    running = Platform(infra_env, log_dir, ports, extra_env=extra)
    running.start(timeout_s=90)
    yield running
    running.stop()


@pytest.fixture
def platform(infra_env: dict[str, str], tmp_path: Path) -> Iterator[Platform]:
    yield from run_platform(infra_env, tmp_path / "logs")


@pytest.fixture
def platform_on_containers(tmp_path: Path) -> Iterator[Platform]:
    """The same platform on Apache Kafka, PostgreSQL and Redis in containers (testcontainers)."""
    if reason := _no_docker_engine():
        pytest.skip(f"needs a Docker engine for testcontainers: {reason}")
    from testcontainers.kafka import KafkaContainer
    from testcontainers.postgres import PostgresContainer
    from testcontainers.redis import RedisContainer

    with (
        KafkaContainer().with_kraft() as kafka,
        PostgresContainer("postgres:16", driver=None) as postgres,
        RedisContainer("redis:7") as redis,
    ):
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": kafka.get_bootstrap_server(),
            "DATABASE_URL": postgres.get_connection_url(),
            "REDIS_URL": f"redis://{redis.get_container_host_ip()}:{redis.get_exposed_port(6379)}/0",
        }
        yield from run_platform(env, tmp_path / "logs")


def _no_docker_engine() -> str | None:
    """Why no Docker engine answers here, or None if one does. (Asked over the socket directly: the docker
    client library leaks a socket when the engine is missing.)"""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        return None  # a remote engine: let testcontainers try it
    path = host.removeprefix("unix://")
    with contextlib.closing(socket.socket(socket.AF_UNIX)) as sock:
        sock.settimeout(2)
        try:
            sock.connect(path)
        except OSError as exc:
            return f"nothing answers at {path} ({exc.strerror or exc})"
    return None


async def test_trade_through_gateway_reaches_websocket_clients(platform: Platform) -> None:
    await check_trade_reaches_websocket(platform)


@pytest.mark.docker
async def test_same_pipeline_on_apache_kafka_in_containers(platform_on_containers: Platform) -> None:
    await check_trade_reaches_websocket(platform_on_containers)


async def check_trade_reaches_websocket(platform: Platform) -> None:
    api = platform.url("gateway") + "/api/v1"
    key = platform.admin_api_key
    ws_url = platform.url("gateway").replace("http://", "ws://") + f"/api/v1/ai-analytics/ws/analytics/e2e?token={key}"
    market = f"e2e-{uuid.uuid4().hex[:8]}"
    close_at = (datetime.now(UTC) + timedelta(days=7)).isoformat()

    async with (
        httpx.AsyncClient(base_url=api, timeout=10, headers=auth_headers(key)) as http,
        websockets.connect(ws_url) as ws,
    ):
        created = await http.post(
            "/markets",
            json={"market_id": market, "question": "Will e2e pass?", "category": "ci", "close_at": close_at},
        )
        assert created.status_code == 201, created.text
        trades = [("alice", "YES", 30.0, 0.6), ("bob", "NO", 20.0, 0.55), ("alice", "YES", 50.0, 0.7)]
        for user, outcome, amount, price in trades:
            body = {
                "market_id": market,
                "user_id": user,
                "outcome": outcome,
                "amount": amount,
                "shares": amount * 2,
                "price": price,
            }
            reply = await http.post("/trades", json=body)
            assert reply.status_code == 201, reply.text

        # Analytics may publish between the trades: wait for the update that includes all three.
        update = await _wait_for_update(
            ws,
            lambda u: (
                u["system_metrics"]["total_trades_24h"] == 3 and any(m["market_id"] == market for m in u["top_markets"])
            ),
        )
        assert set(update) == {"type", "timestamp", "system_metrics", "top_markets"}
        assert update["system_metrics"] == {
            "total_users": 2,
            "active_users": 2,
            "total_markets": 1,
            "active_markets": 1,
            "total_volume_24h": 100.0,
            "total_trades_24h": 3,
        }
        [top] = update["top_markets"]
        assert top == {
            "market_id": market,
            "current_price": 0.7,
            "volume_24h": 100.0,
            "price_change_24h": 40.0,
        }

        async def prediction_of_latest_trade() -> dict[str, Any]:
            reply = await http.get(f"/ai-analytics/predictions/{market}")
            assert reply.status_code == 200, reply.text
            body: dict[str, Any] = reply.json()
            assert body["probability"] == 0.7
            return body

        prediction = await eventually(prediction_of_latest_trade)
        assert prediction["model_version"] == "baseline-market-price"
        assert prediction["confidence"] == 0.7

        reply = await http.get(f"/ai-analytics/analytics/market/{market}")
        assert reply.status_code == 200, reply.text
        metrics = reply.json()
        assert (metrics["participant_count"], metrics["trade_count"], metrics["total_volume"]) == (
            2,
            3,
            100.0,
        )

        missing = await http.get("/ai-analytics/predictions/no-such-market")
        assert missing.status_code == 404
        invalid = await http.post("/trades", json={"market_id": market, "user_id": "x", "outcome": "MAYBE"})
        assert invalid.status_code == 422
        assert invalid.headers["content-type"] == "application/problem+json"
        assert {"outcome", "amount", "shares", "price"} <= {e["loc"][-1] for e in invalid.json()["errors"]}
        anonymous = await http.get(f"/markets/{market}", headers={"authorization": ""})
        assert anonymous.status_code == 401


async def _wait_for_update(
    ws: websockets.ClientConnection, ready: Callable[[dict[str, Any]], bool], timeout_s: float = 30.0
) -> dict[str, Any]:
    async def next_matching() -> dict[str, Any]:
        while True:
            message: dict[str, Any] = json.loads(await ws.recv())
            if message["type"] == "analytics_update" and ready(message):
                return message

    return await asyncio.wait_for(next_matching(), timeout_s)
