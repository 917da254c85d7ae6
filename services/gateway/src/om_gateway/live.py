"""Live updates to WebSocket clients. Every gateway replica consumes the analytics topics without a consumer
group, so each replica receives every update and pushes it to its own clients."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from om_contracts import MarketMetricsUpdated, SystemMetricsUpdated

log = logging.getLogger(__name__)


def analytics_update(event: SystemMetricsUpdated) -> dict[str, Any]:
    """The product's `analytics_update` message."""
    return {
        "type": "analytics_update",
        "timestamp": event.occurred_at.isoformat().replace("+00:00", "Z"),
        "system_metrics": event.system_metrics.model_dump(mode="json"),
        "top_markets": [m.model_dump(mode="json") for m in event.top_markets],
    }


def market_update(event: MarketMetricsUpdated) -> dict[str, Any]:
    market = event.model_dump(
        mode="json",
        exclude={"event_id", "event_type", "schema_version", "produced_at", "producer", "occurred_at"},
    )
    return {
        "type": "market_update",
        "timestamp": event.occurred_at.isoformat().replace("+00:00", "Z"),
        "market": market,
    }


@dataclass(eq=False)
class Client:
    client_id: str
    queue: asyncio.Queue[dict[str, Any]]
    markets: set[str] = field(default_factory=set)

    def offer(self, message: dict[str, Any]) -> None:
        """Queue a message; when the client lags, drop its oldest message rather than block everyone."""
        if self.queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
        self.queue.put_nowait(message)


class LiveHub:
    def __init__(self, queue_size: int) -> None:
        self.queue_size = queue_size
        self.clients: set[Client] = set()
        self.latest: dict[str, Any] | None = None

    def connect(self, client_id: str) -> Client:
        client = Client(client_id, asyncio.Queue(self.queue_size))
        if self.latest is not None:
            client.offer(self.latest)  # a new client sees the current state at once
        self.clients.add(client)
        return client

    def disconnect(self, client: Client) -> None:
        self.clients.discard(client)

    async def on_system(self, event: SystemMetricsUpdated) -> None:
        self.latest = analytics_update(event)
        for client in self.clients:
            client.offer(self.latest)

    async def on_market(self, event: MarketMetricsUpdated) -> None:
        message = None
        for client in self.clients:
            if event.market_id in client.markets:
                message = message or market_update(event)
                client.offer(message)
