"""One trade, one trace: the five services run in this process (real HTTP servers on loopback, the embedded
broker, PostgreSQL and Redis) with an in-memory span exporter, and the test walks the spans from the gateway's
HTTP request through ingest, its outbox relay, every consumer's batch span and the gateway's fan-out consumer to the
WebSocket send.

Publishing has no span per message (its cost showed in profiles): a publish carries the current span's context —
the relay's, or the consuming batch's — in the record's `traceparent` header, and each consumer's batch span links
to the contexts of the records it read. So the walk follows parent -> child edges and links.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn
import websockets
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from om_cli.credentials import API_KEY_ENV, GATEWAY_KEY_FILE_ENV, auth_headers, ensure_admin_key
from om_cli.embedded import free_port
from om_cli.testing import eventually

pytestmark = pytest.mark.integration

#: Start order: the gateway last, its readiness calls the others.
SERVICES = ("ingest", "feature", "prediction", "analytics", "gateway")

#: The hops of one trade, in pipeline order, as span names the walk must reach.
HOPS = (
    "POST /api/v1/trades",  # the gateway's HTTP request
    "POST /v1/trades",  # ingest's HTTP request (W3C traceparent from the gateway)
    "outbox relay",  # ingest's relay, continuing the request's trace stored with the outbox row
    "feature process",  # feature's batch span, linked to the relay that published the trade
    "prediction process",  # linked to feature's batch span that published the vector
    "analytics process",
    "analytics.market.v1 process",  # the gateway's fan-out consumer
    "websocket send",  # the fan-out to the subscribed clients
)


@pytest.fixture
def spans() -> Iterable[InMemorySpanExporter]:
    """Every span this process finishes while the test runs, kept in memory."""
    memory = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    yield memory
    memory.shutdown()  # the processor stays on the global provider; a shut exporter drops what it gets


@pytest.fixture
async def gateway_url(infra_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[str]:
    """The five services as uvicorn servers in this event loop; yields the gateway's base URL."""
    ports = {name: free_port() for name in SERVICES}
    key_file, key = ensure_admin_key(tmp_path)  # the development admin credential, as `om up` makes it
    monkeypatch.setenv(GATEWAY_KEY_FILE_ENV, str(key_file))
    monkeypatch.setenv(API_KEY_ENV, key)
    for name, value in infra_env.items():
        monkeypatch.setenv(name, value)
    for name in SERVICES:
        monkeypatch.setenv(f"{name.upper()}_HTTP_HOST", "127.0.0.1")
        monkeypatch.setenv(f"{name.upper()}_HTTP_PORT", str(ports[name]))
    for upstream in ("ingest", "prediction", "analytics"):
        monkeypatch.setenv(f"GATEWAY_{upstream.upper()}_URL", f"http://127.0.0.1:{ports[upstream]}")
    servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []
    try:
        for name in SERVICES:
            settings_module = importlib.import_module(f"om_{name}.settings")
            [settings] = [v for k, v in vars(settings_module).items() if k.lower() == f"{name}settings"]
            app = importlib.import_module(f"om_{name}.app").create_app(settings())
            config = uvicorn.Config(app, host="127.0.0.1", port=ports[name], log_level="warning", lifespan="on")
            server = uvicorn.Server(config)
            servers.append((server, asyncio.create_task(server.serve())))
            async with asyncio.timeout(60):
                while not server.started:
                    assert not servers[-1][1].done(), f"{name} stopped while starting"
                    await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{ports['gateway']}"
    finally:
        for server, _ in reversed(servers):
            server.should_exit = True
        await asyncio.gather(*(task for _, task in servers), return_exceptions=True)


def public_client(base_url: str) -> httpx.AsyncClient:
    """Every call to the public API goes through here (credentials, when the gateway requires them, go here)."""
    return httpx.AsyncClient(base_url=base_url + "/api/v1", timeout=10, headers=auth_headers())


def reachable(spans: Iterable[ReadableSpan], root: ReadableSpan) -> list[ReadableSpan]:
    """Spans reachable from `root` by parent -> child edges and by links (a span that links to a reached span
    continues its work: a consumer's batch span links to the publishes of the events it read)."""
    spans = list(spans)
    children: dict[int, list[ReadableSpan]] = {}
    linked_from: dict[int, list[ReadableSpan]] = {}
    for span in spans:
        if span.parent is not None:
            children.setdefault(span.parent.span_id, []).append(span)
        for link in span.links:
            linked_from.setdefault(link.context.span_id, []).append(span)
    seen = {root.context.span_id}
    order, frontier = [root], [root]
    while frontier:
        span = frontier.pop()
        for nxt in children.get(span.context.span_id, []) + linked_from.get(span.context.span_id, []):
            if nxt.context.span_id not in seen:
                seen.add(nxt.context.span_id)
                order.append(nxt)
                frontier.append(nxt)
    return order


async def trade_and_wait_for_push(gateway_url: str, memory: InMemorySpanExporter) -> ReadableSpan:
    """Create a market, then post one trade and wait for its market update on a WebSocket; return the span of
    the trade's HTTP request at the gateway."""
    market = f"trace-{uuid.uuid4().hex[:8]}"
    token = os.environ[API_KEY_ENV]
    ws_url = (
        gateway_url.replace("http://", "ws://", 1) + f"/api/v1/ai-analytics/ws/analytics/trace-client?token={token}"
    )
    async with public_client(gateway_url) as api, websockets.connect(ws_url) as ws:
        await ws.send(json.dumps({"type": "subscribe", "market_ids": [market]}))
        close_at = (datetime.now(UTC) + timedelta(days=7)).isoformat()
        created = await api.post("/markets", json={"market_id": market, "question": "One trace?", "close_at": close_at})
        assert created.status_code == 201, created.text
        trade = {"market_id": market, "user_id": "tracer", "outcome": "YES", "amount": 10.0, "shares": 20.0}
        posted = await api.post("/trades", json={**trade, "price": 0.6})
        assert posted.status_code == 201, posted.text
        async with asyncio.timeout(30):
            while True:
                update = json.loads(await ws.recv())
                pushed = update.get("market") or {}
                if update.get("type") == "market_update" and pushed.get("market_id") == market:
                    if pushed.get("trade_count") == 1:  # the update the trade caused, not the creation's
                        break
    [request] = [
        s for s in memory.get_finished_spans() if s.name == "POST /api/v1/trades" and s.kind == trace.SpanKind.SERVER
    ]
    return request


async def test_one_trace_from_the_http_trade_to_the_websocket_send(
    gateway_url: str, spans: InMemorySpanExporter
) -> None:
    request = await trade_and_wait_for_push(gateway_url, spans)

    def reaches(names: list[str], hop: str) -> bool:
        return any(name == hop or name.endswith(" " + hop) for name in names)

    async def every_hop_reached() -> list[str]:
        names = [s.name for s in reachable(spans.get_finished_spans(), request)]
        missing = [hop for hop in HOPS if not reaches(names, hop)]
        assert not missing, f"the walk from the HTTP request does not reach {missing}; it reached {names}"
        return names

    names = await eventually(every_hop_reached, timeout_s=15)
    # The HTTP part is one trace; the relay and each consumer's batch span start traces of their own and link to
    # the work they continue (the relay to the requests whose rows it publishes).
    same_trace = {s.name for s in spans.get_finished_spans() if s.context.trace_id == request.context.trace_id}
    assert "POST /v1/trades" in same_trace
    relays = [s for s in spans.get_finished_spans() if s.name == "outbox relay"]
    assert any(link.context.trace_id == request.context.trace_id for s in relays for link in s.links)
    assert names.index("analytics.market.v1 process") > names.index("POST /v1/trades")
