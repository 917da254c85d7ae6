"""Every gateway replica receives every analytics update (no consumer group), so every client sees it."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

import pytest

from om_cli.testing import app_client, eventually, produce
from om_contracts import MarketSummary, SystemMetrics, SystemMetricsUpdated, encode
from om_gateway.app import create_app
from om_gateway.settings import GatewaySettings

pytestmark = pytest.mark.integration


def snapshot(trades: int) -> SystemMetricsUpdated:
    return SystemMetricsUpdated(
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


async def test_each_replica_pushes_every_update_to_its_clients(kafka_bootstrap: str) -> None:
    settings = GatewaySettings(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap)
    replicas = [create_app(settings), create_app(settings)]
    async with contextlib.AsyncExitStack() as stack:
        for app in replicas:
            await stack.enter_async_context(app_client(app))
        clients = [app.state.hub.connect(f"client-{i}") for i, app in enumerate(replicas)]

        sent = 0

        async def every_client_got_an_update() -> None:
            nonlocal sent
            sent += 1  # a replica only reads updates published after it joined: keep publishing until both have
            await produce(kafka_bootstrap, "analytics.system.v1", [encode(snapshot(sent))])
            assert all(not c.queue.empty() for c in clients)

        await eventually(every_client_got_an_update, interval_s=0.3)

    for client in clients:
        message = client.queue.get_nowait()
        assert message["type"] == "analytics_update"
        assert message["system_metrics"]["total_users"] == 3
        assert message["top_markets"] == [
            {"market_id": "m1", "current_price": 0.6, "volume_24h": 12.5, "price_change_24h": 20.0}
        ]
