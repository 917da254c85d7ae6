"""Test support for the gateway: a gateway over real PostgreSQL, Redis and Kafka, with small real upstream
apps in process (the agreed internal APIs of prediction and analytics, interfaces 4 and 5, answering from
memory) where a test does not need the real services."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
from fastapi import APIRouter, FastAPI, HTTPException, Request

from om_gateway.app import create_app
from om_gateway.settings import GatewaySettings

ADMIN_KEY = "test-admin-key-0123456789abcdef"
# bandit: a test-only secret, signing the tests' tokens
JWT_SECRET = "test-secret-at-least-32-bytes-long!!"  # nosec B105
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def token(role: str, sub: str = "user-1", *, secret: str = JWT_SECRET, **claims: Any) -> str:
    payload = {"sub": sub, "role": role, "aud": "opinion-market", "exp": int(time.time()) + 300, **claims}
    return jwt.encode(payload, secret, algorithm="HS256")


def bearer(credential: str) -> dict[str, str]:
    return {"authorization": f"Bearer {credential}"}


def _market(market_id: str) -> dict[str, Any]:
    return {
        "market_id": market_id,
        "question": f"Will {market_id} happen?",
        "category": "general",
        "status": "open",
        "created_at": NOW.isoformat(),
        "close_at": (NOW + timedelta(days=7)).isoformat(),
        "current_price": 0.5,
        "last_trade_at": None,
        "resolution": None,
        "resolution_price": None,
    }


def _prediction(market_id: str) -> dict[str, Any]:
    return {
        "event_id": "00000000-0000-0000-0000-000000000001",
        "event_type": "prediction.made",
        "schema_version": 1,
        "occurred_at": NOW.isoformat(),
        "produced_at": NOW.isoformat(),
        "producer": "prediction",
        "market_id": market_id,
        "probability": 0.6,
        "confidence": 0.6,
        "risk_level": "medium",
        "model_version": "v1",
        "contributions": [],
        "features_as_of": NOW.isoformat(),
    }


def stub_prediction() -> FastAPI:
    """prediction's internal API (interface 4); markets whose id starts with `unknown` have no prediction."""
    api = APIRouter(prefix="/v1")

    @api.get("/markets/{market_id}/prediction")
    async def one(market_id: str) -> dict[str, Any]:
        if market_id.startswith("unknown"):
            raise HTTPException(404, f"no prediction for {market_id}")
        return _prediction(market_id)

    @api.get("/markets/{market_id}/predictions")
    async def history(market_id: str) -> dict[str, Any]:
        return {"items": [_prediction(market_id)], "next_cursor": None}

    @api.post("/predictions/batch")
    async def batch(request: Request) -> dict[str, Any]:
        ids = (await request.json())["market_ids"]
        return {
            "predictions": {i: _prediction(i) for i in ids if not i.startswith("unknown")},
            "errors": {i: {"status": 404, "detail": "no prediction"} for i in ids if i.startswith("unknown")},
        }

    @api.get("/models")
    async def models() -> list[dict[str, Any]]:
        return [{"version": "v1", "active": True}]

    @api.get("/models/{version}")
    async def model(version: str) -> dict[str, Any]:
        if version != "v1":
            raise HTTPException(404, f"no model {version}")
        return {"version": "v1", "active": True}

    app = FastAPI()
    app.include_router(api)
    app.get("/health")(lambda: {"status": "ok"})
    return app


def stub_analytics() -> FastAPI:
    """analytics' internal API (interface 5), answering every path with a small document."""
    api = APIRouter(prefix="/v1")
    for path in (
        "/markets/{key}/metrics",
        "/markets/{key}/candles",
        "/markets/{key}/price-history",
        "/users/{key}/metrics",
        "/users/{key}/portfolio",
        "/insights/market/{key}",
        "/insights/portfolio/{key}",
    ):
        api.get(path)(_echo)
    api.get("/markets")(lambda: {"items": [_market("m1")], "next_cursor": None})
    api.get("/system/metrics")(
        lambda: {
            "event_id": "00000000-0000-0000-0000-000000000002",
            "event_type": "analytics.system_metrics_updated",
            "schema_version": 1,
            "occurred_at": NOW.isoformat(),
            "produced_at": NOW.isoformat(),
            "producer": "analytics",
            "system_metrics": {
                "total_users": 1,
                "active_users": 1,
                "total_markets": 1,
                "active_markets": 1,
                "total_volume_24h": 1.0,
                "total_trades_24h": 1,
            },
            "top_markets": [],
        }
    )
    api.get("/system/health")(lambda: {"services": {"ingest": "ok"}})
    api.get("/leaderboard")(lambda: {"items": []})
    api.get("/calibration")(lambda: {"bins": []})
    app = FastAPI()
    app.include_router(api)
    app.get("/health")(lambda: {"status": "ok"})
    return app


async def _echo(key: str) -> dict[str, Any]:
    if key.startswith("unknown"):
        raise HTTPException(404, f"unknown {key}")
    return {"id": key}


def stub_ingest() -> FastAPI:
    """ingest's write API reduced to echoes (the matrix test needs answers, not records)."""
    app = FastAPI()
    app.get("/health")(lambda: {"status": "ok"})

    @app.api_route("/v1/{path:path}", methods=["GET", "POST"])
    async def anything(path: str, request: Request) -> Any:
        if request.method == "GET" and path.startswith("markets/") and path.count("/") == 1:
            return _market(path.split("/")[1])
        if path.endswith("/trades"):
            return []
        return _market("m1")

    return app


def gateway_settings(infra: dict[str, str], tmp_path: Path, **overrides: Any) -> GatewaySettings:
    key_file = tmp_path / "admin-api-key"
    key_file.write_text(ADMIN_KEY + "\n")
    values: dict[str, Any] = {
        "KAFKA_BOOTSTRAP_SERVERS": infra["KAFKA_BOOTSTRAP_SERVERS"],
        "DATABASE_URL": infra["DATABASE_URL"],
        "REDIS_URL": infra["REDIS_URL"],
        "admin_api_key_file": key_file,
        "jwt_secret": JWT_SECRET,
    }
    values.update(overrides)
    return GatewaySettings(**values)


@contextlib.asynccontextmanager
async def running_gateway(
    settings: GatewaySettings, **upstream_apps: FastAPI
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    from om_cli.testing import app_client  # dev-only: this module is imported by the service's tests alone

    apps = {"ingest": stub_ingest(), "prediction": stub_prediction(), "analytics": stub_analytics(), **upstream_apps}
    transports = {name: httpx.ASGITransport(app=a) for name, a in apps.items() if a is not None}
    app = create_app(settings, transports=transports)
    async with app_client(app) as client:
        yield app, client


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    """Run an app with uvicorn on a free loopback port in this process (for WebSocket clients); yields its URL."""
    import asyncio

    import uvicorn

    from om_cli.embedded import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
