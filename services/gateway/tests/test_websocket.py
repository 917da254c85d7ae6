"""The WebSocket protocol against real gateways (uvicorn, Kafka, PostgreSQL, Redis): authentication on connect,
acknowledged subscriptions, updates numbered identically on two replicas, resuming on the other replica with a
backfill, and the product's endpoint still pushing `analytics_update`."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import websockets

from om_cli.testing import eventually, produce
from om_contracts import MarketMetricsUpdated, MarketSummary, SystemMetrics, SystemMetricsUpdated, encode
from om_gateway.app import create_app
from om_gateway.testing import ADMIN_KEY, gateway_settings, serving, stub_analytics, stub_ingest, stub_prediction, token

pytestmark = pytest.mark.integration


def market(price: float, market_id: str = "m1") -> bytes:
    return encode(
        MarketMetricsUpdated(
            occurred_at=datetime.now(UTC),
            producer="test",
            market_id=market_id,
            status="open",
            current_price=price,
            price_change_24h=0.0,
            volume_24h=1.0,
            total_volume=1.0,
            trade_count=1,
            participant_count=1,
        )
    )


def system(trades: int) -> bytes:
    return encode(
        SystemMetricsUpdated(
            occurred_at=datetime.now(UTC),
            producer="test",
            system_metrics=SystemMetrics(
                total_users=3,
                active_users=2,
                total_markets=1,
                active_markets=1,
                total_volume_24h=12.5,
                total_trades_24h=trades,
            ),
            top_markets=[MarketSummary(market_id="m1", current_price=0.6, volume_24h=12.5, price_change_24h=20.0)],
        )
    )


async def next_of(ws: Any, kind: str) -> dict[str, Any]:
    async with asyncio.timeout(15):
        while True:
            message = json.loads(await ws.recv())
            if message["type"] == kind:
                return message


def gateway_app(infra_env: dict[str, str], tmp_path: Any) -> Any:
    transports = {
        n: httpx.ASGITransport(app=a())
        for n, a in (("ingest", stub_ingest), ("prediction", stub_prediction), ("analytics", stub_analytics))
    }
    return create_app(gateway_settings(infra_env, tmp_path), transports=transports)


async def test_protocol_sequence_numbers_and_resume_on_another_replica(infra_env, tmp_path, kafka_bootstrap) -> None:
    async with contextlib.AsyncExitStack() as stack:
        one = await stack.enter_async_context(serving(gateway_app(infra_env, tmp_path)))
        second = gateway_app(infra_env, tmp_path)
        two = await stack.enter_async_context(serving(second))

        async with websockets.connect(f"ws://{one}/api/v1/ws?token=wrong") as refused:
            with pytest.raises(websockets.ConnectionClosed):
                await refused.recv()
            assert refused.close_code == 4001

        async with websockets.connect(f"ws://{one}/api/v1/ws") as ws:
            await ws.send(json.dumps({"type": "auth", "token": token("viewer")}))
            assert (await next_of(ws, "welcome"))["role"] == "viewer"
            await ws.send(json.dumps({"type": "subscribe", "id": "s1", "channels": ["market/m1"]}))
            assert (await next_of(ws, "ack"))["id"] == "s1"
            assert (await next_of(ws, "snapshot"))["channel"] == "market/m1"
            # Both replicas follow the topic from their start: publish until the first replica forwards updates.
            await produce(kafka_bootstrap, "analytics.market.v1", [market(p / 10) for p in range(1, 4)], key=b"m1")
            seqs = [(await next_of(ws, "market_update"))["seq"] for _ in range(3)]
        assert seqs == sorted(seqs) and len(set(seqs)) == 3

        async def second_replica_has_read_them() -> None:
            history = second.state.hub.history.get("market/m1")
            assert history is not None and [seq for seq, _ in history.updates] == seqs

        await eventually(second_replica_has_read_them)
        async with websockets.connect(f"ws://{two}/api/v1/ws?token={ADMIN_KEY}") as ws:
            await next_of(ws, "welcome")
            await ws.send(json.dumps({"type": "subscribe", "id": 2, "channels": ["market/m1"], "since": seqs[0]}))
            backfill = await next_of(ws, "backfill")
            assert backfill["count"] == 2
            resumed = [json.loads(await ws.recv()) for _ in range(2)]
            assert [m["seq"] for m in resumed] == seqs[1:]
            assert [m["market"]["current_price"] for m in resumed] == [0.2, 0.3]


async def test_the_product_endpoint_pushes_analytics_update(infra_env, tmp_path, kafka_bootstrap) -> None:
    async with serving(gateway_app(infra_env, tmp_path)) as url:
        path = f"ws://{url}/api/v1/ai-analytics/ws/analytics/client-1?token={token('viewer')}"
        async with websockets.connect(path) as ws:
            await next_of(ws, "welcome")
            await produce(kafka_bootstrap, "analytics.system.v1", [system(5)])
            update = await next_of(ws, "analytics_update")
            assert update["system_metrics"]["total_trades_24h"] == 5
            assert update["top_markets"] == [
                {"market_id": "m1", "current_price": 0.6, "volume_24h": 12.5, "price_change_24h": 20.0}
            ]
            await ws.send("x" * (70 * 1024))
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await ws.recv()
            assert ws.close_code == 1009
