"""Wires the gateway together: upstream clients, the fan-out consumers, REST, WebSocket and the dashboard."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse

from om_contracts.topics import ANALYTICS_MARKET, ANALYTICS_SYSTEM
from om_gateway import api
from om_gateway.live import LiveHub
from om_gateway.settings import GatewaySettings
from om_gateway.upstream import Upstreams
from om_runtime.service import ServiceRuntime

DASHBOARD = Path(__file__).parent / "static" / "dashboard.html"


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    runtime = ServiceRuntime(settings)
    upstreams = Upstreams(
        {
            "ingest": settings.ingest_url,
            "prediction": settings.prediction_url,
            "analytics": settings.analytics_url,
        },
        settings.upstream_timeout_s,
    )
    runtime.add_resource(upstreams.open(), name="services", check=upstreams.ready)
    hub = LiveHub(settings.ws_queue_size)
    runtime.consume({ANALYTICS_SYSTEM: hub.on_system, ANALYTICS_MARKET: hub.on_market}, fanout=True)
    app = runtime.create_app(
        title="Opinion Market API",
        description="Markets, trades, predictions and analytics of the Opinion Market platform, with live updates.",
        version="1.0.0",
        routers=[api.router(upstreams, hub)],
    )

    app.state.hub = hub

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(DASHBOARD)

    return app
