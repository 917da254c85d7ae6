"""Wires the gateway together: credentials, rate limits, upstream clients, the live feed, REST, WebSocket and
the dashboard, behind the edge middleware (security headers, body limit, operational access, refusal counts)."""

from __future__ import annotations

import base64
import hashlib
import re
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import Histogram

from om_gateway import admin, api, feed, problems
from om_gateway.auth import Authenticator, KeyStore
from om_gateway.edge import BodyLimit, OpsGuard, RefusalCounter, SecurityHeaders
from om_gateway.guard import Gate
from om_gateway.live import LiveHub
from om_gateway.ratelimit import RateLimits
from om_gateway.settings import GatewaySettings
from om_gateway.upstream import Upstreams
from om_gateway.ws import LiveEndpoint, SendThread
from om_runtime.db import Database
from om_runtime.service import ServiceRuntime

STATIC = Path(__file__).parent / "static"
MIGRATIONS = Path(__file__).parent / "migrations"

DESCRIPTION = """Markets, trades, predictions and analytics of the Opinion Market platform, with live updates.

Every operation needs `Authorization: Bearer <API key or JWT>`; which roles may call it is in docs/api.md
(role × operation matrix). Every error is `application/problem+json` (RFC 9457) with a documented `type`."""


def create_app(
    settings: GatewaySettings | None = None, *, transports: Mapping[str, httpx.AsyncBaseTransport] | None = None
) -> FastAPI:
    """`transports` replaces the network to named upstream services (tests run them in-process)."""
    settings = settings or GatewaySettings()
    runtime = ServiceRuntime(settings)
    db = Database(settings.database_url, schema="gateway", migrations=MIGRATIONS, pool_size=settings.database_pool_size)
    runtime.add_resource(db, name="postgres", check=db.ping)
    upstreams = Upstreams(
        {"ingest": settings.ingest_url, "prediction": settings.prediction_url, "analytics": settings.analytics_url},
        settings.upstream_timeout_s,
        retry_after_s=settings.upstream_retry_after_s,
        transports=transports,
    )
    # Upstreams are not a readiness condition: while one is down only its routes answer 503.
    runtime.add_resource(upstreams.open(), name="services", check=upstreams.status)
    auth = Authenticator(settings, KeyStore(db))
    gate = Gate(auth, RateLimits.over_redis(settings.rate_limits, settings.redis_url))
    # Before serving (besides the runtime's routes and OpenAPI document): the rate limiter's first Redis connection
    # and script load, and the first connections to the upstreams (each answers or fails within a second).
    runtime.add_warm_up(gate.limits.connect)
    runtime.add_warm_up(upstreams.status)

    hub = LiveHub(settings.ws_queue_size, settings.ws_backfill, SendThread() if settings.ws_send_thread else None)
    live = LiveEndpoint(hub, auth, settings, runtime.registry)
    buckets = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
    metrics = feed.FeedMetrics(
        read_lag=Histogram(
            "gateway_live_read_lag_seconds",
            "Event time to the update being read from Kafka by the gateway",
            buckets=buckets,
            registry=runtime.registry,
        ),
        round=Histogram(
            "gateway_live_round_seconds",
            "A read's round: decoding its updates and writing them to every WebSocket subscriber (or its queue)",
            buckets=(0.001, 0.0025, *buckets),
            registry=runtime.registry,
        ),
        lag=Histogram(
            "gateway_live_update_lag_seconds",
            "Event time to the update being sent to (or queued for) its WebSocket subscribers",
            buckets=buckets,
            registry=runtime.registry,
        ),
    )
    runtime.add_loop(
        "live-feed",
        lambda: feed.follow(
            hub,
            settings.kafka_bootstrap_servers,
            settings.ws_history_s,
            settings.kafka_fetch_max_wait_ms,
            metrics,
            settings.ws_linger_ms,
        ),
    )
    runtime.add_loop("ws-heartbeats", live.heartbeats)

    app = runtime.create_app(
        title="Opinion Market API",
        description=DESCRIPTION,
        version="1.1.0",
        routers=[api.router(upstreams, gate), admin.router(KeyStore(db), auth, gate)],
        docs_url=None,
        redoc_url=None,
    )
    app.state.hub = hub
    app.state.auth = auth
    app.state.upstreams = upstreams
    app.state.gate = gate
    problems.install(app)
    _document(app)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(STATIC / "dashboard.html")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return _swagger()

    app.add_middleware(OpsGuard, auth=auth, public_docs=settings.public_docs, public_metrics=settings.public_metrics)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["authorization", "content-type", "idempotency-key"],
            expose_headers=["retry-after"],
        )
    app.add_middleware(RefusalCounter, registry=runtime.registry)
    app.add_middleware(SecurityHeaders)
    _websockets_bypass_middleware(app, live)
    return app


def _websockets_bypass_middleware(app: FastAPI, live: LiveEndpoint) -> None:
    """WebSocket connections go straight to the live endpoint: no middleware wraps each send."""
    build_http_stack = app.build_middleware_stack

    def build(self: FastAPI) -> Any:
        http_stack = build_http_stack()

        async def edge(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "websocket":
                await live(scope, receive, send)
            else:
                await http_stack(scope, receive, send)

        return edge

    app.build_middleware_stack = types.MethodType(build, app)  # type: ignore[method-assign]


def _document(app: FastAPI) -> None:
    """The OpenAPI document: problem schemas and the bearer scheme on every operation."""
    make = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = problems.add_schemas(make())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _swagger() -> HTMLResponse:
    """Swagger UI with a CSP that allows its CDN files and its one inline script by hash (no unsafe-inline)."""
    page = get_swagger_ui_html(openapi_url="/openapi.json", title="Opinion Market API")
    html = bytes(page.body).decode()
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'"
        for s in re.findall(r"<script>(.*?)</script>", html, flags=re.S)
    )
    cdn = "https://cdn.jsdelivr.net"
    csp = (
        f"default-src 'self'; script-src 'self' {cdn} {hashes}; style-src 'self' {cdn}; img-src 'self' data: "
        f"https://fastapi.tiangolo.com; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
    return HTMLResponse(html, headers={"content-security-policy": csp})
