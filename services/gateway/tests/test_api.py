"""The gateway's edge: malformed writes are refused here with field detail (ingest never sees them), and an
unreachable service becomes a 503 that names it."""

from __future__ import annotations

import httpx

from om_cli.embedded import free_port
from om_gateway.app import create_app
from om_gateway.settings import GatewaySettings
from om_gateway.upstream import Upstreams


async def test_malformed_writes_are_refused_at_the_edge() -> None:
    # Nothing listens on the ingest URL: a request that got past validation would fail differently.
    app = create_app(GatewaySettings(GATEWAY_INGEST_URL=f"http://127.0.0.1:{free_port()}"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        trade = {"market_id": "m1", "user_id": "u", "outcome": "MAYBE", "amount": -1, "shares": 1, "price": 2}
        reply = await client.post("/api/v1/trades", json=trade)
        assert reply.status_code == 422
        assert {("body", "outcome"), ("body", "amount"), ("body", "price")} <= {
            tuple(e["loc"]) for e in reply.json()["detail"]
        }

        unknown_field = await client.post("/api/v1/signals", json={"market_id": "m1", "kind": "news", "src": "x"})
        assert unknown_field.status_code == 422
        assert ("body", "src") in {tuple(e["loc"]) for e in unknown_field.json()["detail"]}

        bad_id = await client.get("/api/v1/ai-analytics/predictions/not%20an%20id")
        assert bad_id.status_code == 422 and bad_id.json()["detail"][0]["loc"] == ["path", "market_id"]

        too_many = await client.get("/api/v1/markets", params={"limit": 5000})
        assert too_many.status_code == 422 and too_many.json()["detail"][0]["loc"] == ["query", "limit"]


async def test_an_unreachable_service_is_a_503_naming_it() -> None:
    upstreams = Upstreams({"ingest": f"http://127.0.0.1:{free_port()}"}, timeout_s=2)
    async with upstreams.open():
        reply = await upstreams.forward("ingest", "GET", "/v1/markets")
    assert reply.status_code == 503
    assert reply.body == b'{"detail":"ingest is unavailable"}'
