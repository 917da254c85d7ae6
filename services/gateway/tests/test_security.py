"""The gateway's security, over HTTP against a real gateway (PostgreSQL, Redis, Kafka): tokens that must be
refused, API keys shown once and revocable, the role × operation matrix cell by cell, rate limits, the body
limit, security headers and the operational endpoints."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from om_gateway.access import MATRIX, ROLES, Role, matrix_markdown
from om_gateway.testing import ADMIN_KEY, JWT_SECRET, bearer, gateway_settings, running_gateway, token

pytestmark = pytest.mark.integration
DOCS = Path(__file__).parents[3] / "docs" / "api.md"

#: One request per operation; "{user}" is replaced by a user id.
PROBES: dict[str, tuple[str, str, Any]] = {
    "markets:read": ("GET", "/api/v1/markets/m1", None),
    "markets:write": ("POST", "/api/v1/markets/m1/close", None),
    "trades:write": (
        "POST",
        "/api/v1/trades",
        {"market_id": "m1", "user_id": "{user}", "outcome": "YES", "amount": 1, "shares": 2, "price": 0.5},
    ),
    "signals:write": ("POST", "/api/v1/signals", {"market_id": "m1", "kind": "news", "source": "x", "text": "y"}),
    "predictions:read": ("GET", "/api/v1/ai-analytics/predictions/m1", None),
    "analytics:read": ("GET", "/api/v1/ai-analytics/analytics/system", None),
    "users:read": ("GET", "/api/v1/ai-analytics/analytics/user/{user}", None),
    "models:read": ("GET", "/api/v1/models", None),
    "api-keys:manage": ("GET", "/api/v1/admin/api-keys", None),
    "operations:read": ("GET", "/metrics", None),
}


async def probe(client: httpx.AsyncClient, operation: str, credential: str, user: str) -> int:
    method, path, body = PROBES[operation]
    body = json.loads(json.dumps(body).replace("{user}", user)) if body else None
    reply = await client.request(method, path.replace("{user}", user), json=body, headers=bearer(credential))
    return reply.status_code


def test_every_operation_has_a_probe_and_the_docs_show_the_matrix() -> None:
    assert set(PROBES) | {"live:connect"} == set(MATRIX)
    assert matrix_markdown() in DOCS.read_text(), "docs/api.md must contain matrix_markdown() verbatim"


async def test_role_matrix_cell_by_cell(gateway) -> None:
    _, client = gateway
    for operation, cells in MATRIX.items():
        if operation == "live:connect":
            continue  # the WebSocket test covers it
        for role in ROLES:
            cell = cells.get(role, "no")
            own = await probe(client, operation, token(role, sub="user-1"), "user-1")
            other = await probe(client, operation, token(role, sub="user-1"), "user-2")
            where = f"{operation} as {role}"
            if cell == "no":
                assert own == 403 and other == 403, where
            elif cell == "own":
                assert own not in (401, 403) and other == 403, where
            else:
                assert own not in (401, 403) and other not in (401, 403), where


@pytest.mark.parametrize(
    "credential",
    [
        pytest.param(lambda: token("admin", secret="another-secret-of-the-same-length!!!"), id="forged"),
        pytest.param(lambda: token("admin", exp=int(time.time()) - 3600), id="expired"),
        pytest.param(lambda: token("admin", aud="someone-else"), id="wrong-audience"),
        pytest.param(
            lambda: jwt.encode(
                {"sub": "x", "role": "admin", "aud": "opinion-market", "exp": int(time.time()) + 60},
                None,
                algorithm="none",
            ),
            id="alg-none",
        ),
        pytest.param(lambda: token("emperor"), id="unknown-role"),
        pytest.param(
            lambda: jwt.encode({"sub": "x", "role": "admin", "aud": "opinion-market"}, JWT_SECRET, algorithm="HS256"),
            id="no-expiry",
        ),
        pytest.param(lambda: "omk_000000000000_nope", id="unknown-api-key"),
        pytest.param(lambda: ADMIN_KEY + "x", id="almost-the-admin-key"),
    ],
)
async def test_bad_credentials_are_refused(gateway, credential) -> None:
    _, client = gateway
    reply = await client.get("/api/v1/markets/m1", headers=bearer(credential()))
    assert reply.status_code == 401
    assert reply.headers["content-type"] == "application/problem+json"
    assert reply.json()["type"] == "urn:opinion-market:problem:unauthenticated"
    assert reply.headers["www-authenticate"] == "Bearer"


async def test_api_keys_are_shown_once_hashed_at_rest_and_revocable(gateway, infra_env) -> None:
    app, client = gateway
    admin = bearer(ADMIN_KEY)
    created = await client.post(
        "/api/v1/admin/api-keys", json={"name": "desk", "role": "trader", "subject": "u7"}, headers=admin
    )
    assert created.status_code == 201
    key, key_id = created.json()["api_key"], created.json()["key_id"]
    assert key.startswith(f"omk_{key_id}_")
    assert (await client.get("/api/v1/ai-analytics/analytics/user/u7", headers=bearer(key))).status_code == 200
    listed = (await client.get("/api/v1/admin/api-keys", headers=admin)).json()
    assert [k["key_id"] for k in listed] == [key_id] and "api_key" not in listed[0]

    import psycopg

    with psycopg.connect(infra_env["DATABASE_URL"]) as conn:
        stored = conn.execute("SELECT secret_hash FROM gateway.api_keys WHERE key_id = %s", (key_id,)).fetchone()[0]
    assert key.split("_", 2)[2].encode() not in bytes(stored) and len(bytes(stored)) == 32

    assert (await client.delete(f"/api/v1/admin/api-keys/{key_id}", headers=admin)).json()["revoked_at"]
    assert (await client.get("/api/v1/markets/m1", headers=bearer(key))).status_code == 401
    assert (await client.delete("/api/v1/admin/api-keys/000000000000", headers=admin)).status_code == 404


async def test_rs256_tokens_from_a_jwks_url(infra_env, tmp_path) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    body = json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}).encode()

    class Jwks(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Jwks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings = gateway_settings(infra_env, tmp_path, jwt_jwks_url=f"http://127.0.0.1:{server.server_port}/jwks")
        async with running_gateway(settings) as (_, client):
            claims = {"sub": "u1", "role": "viewer", "aud": "opinion-market", "exp": int(time.time()) + 60}
            good = jwt.encode(claims, private, algorithm="RS256", headers={"kid": "k1"})
            assert (await client.get("/api/v1/markets/m1", headers=bearer(good))).status_code == 200
            # An HS256 token signed with the public key (algorithm confusion) is refused.
            assert (await client.get("/api/v1/markets/m1", headers=bearer(token("admin")))).status_code == 401
    finally:
        server.shutdown()
        server.server_close()


async def test_rate_limits_answer_429_with_retry_after_and_are_counted(infra_env, tmp_path) -> None:
    settings = gateway_settings(
        infra_env, tmp_path, rate_limits={"anonymous": "3/minute", "viewer": "5/minute", "admin": "1000/minute"}
    )
    async with running_gateway(settings) as (_, client):
        viewer = bearer(token("viewer", sub="rate-test-viewer"))
        codes = [(await client.get("/api/v1/markets/m1", headers=viewer)).status_code for _ in range(7)]
        assert codes[:5] == [200] * 5 and codes[5:] == [429, 429]
        limited = await client.get("/api/v1/markets/m1", headers=viewer)
        assert int(limited.headers["retry-after"]) >= 1
        assert limited.json()["type"] == "urn:opinion-market:problem:rate-limited"
        metrics = (await client.get("/metrics", headers=bearer(ADMIN_KEY))).text
        assert 'gateway_refusals_total{status="429"} 3.0' in metrics


async def test_body_limit_headers_and_operational_endpoints(gateway) -> None:
    _, client = gateway
    admin = bearer(ADMIN_KEY)
    huge = b'{"trades": [' + b"0," * 600_000 + b"0]}"
    too_big = await client.post(
        "/api/v1/trades/batch", content=huge, headers={**admin, "content-type": "application/json"}
    )
    assert too_big.status_code == 413 and too_big.json()["type"] == "urn:opinion-market:problem:payload-too-large"

    page = await client.get("/")
    assert "unsafe-inline" not in page.headers["content-security-policy"]
    assert "<script>" not in page.text and "<style>" not in page.text and " style=" not in page.text
    assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"

    for path in ("/metrics", "/docs", "/openapi.json"):
        assert (await client.get(path)).status_code == 401, path
        assert (await client.get(path, headers=bearer(token("viewer")))).status_code == 403, path
        assert (await client.get(path, headers=admin)).status_code == 200, path
    assert (await client.get("/ready")).json() == {"status": "ready"}
    assert set((await client.get("/ready", headers=admin)).json()["checks"]) >= {"postgres", "kafka"}


async def test_an_upstream_down_leaves_the_gateway_ready_and_its_routes_503(infra_env, tmp_path) -> None:
    settings = gateway_settings(infra_env, tmp_path, prediction_url="http://127.0.0.1:9")
    async with running_gateway(settings, prediction=None) as (_, client):
        admin = bearer(ADMIN_KEY)
        assert (await client.get("/ready")).status_code == 200
        down = await client.get("/api/v1/ai-analytics/predictions/m1", headers=admin)
        assert down.status_code == 503 and down.headers["retry-after"] == "5"
        assert down.json()["detail"] == "prediction is unavailable"
        assert (await client.get("/api/v1/ai-analytics/analytics/system", headers=admin)).status_code == 200


async def test_trader_records_only_own_trades_and_upstream_errors_are_problems(gateway) -> None:
    _, client = gateway
    admin = bearer(ADMIN_KEY)
    missing = await client.get("/api/v1/ai-analytics/predictions/unknown-1", headers=admin)
    assert missing.status_code == 404
    assert missing.json() == {
        "type": "urn:opinion-market:problem:not-found",
        "title": "No such resource",
        "status": 404,
        "detail": "no prediction for unknown-1",
    }
    batch = await client.post(
        "/api/v1/trades/batch",
        headers=bearer(token(Role.trader, sub="me")),
        json={
            "trades": [
                {"market_id": "m1", "user_id": "me", "outcome": "YES", "amount": 1, "shares": 2, "price": 0.5},
                {"market_id": "m1", "user_id": "you", "outcome": "YES", "amount": 1, "shares": 2, "price": 0.5},
            ]
        },
    )
    assert batch.status_code == 403


async def test_cors_is_off_by_default_and_configurable(infra_env, tmp_path) -> None:
    preflight = {"origin": "https://app.example", "access-control-request-method": "GET",
                 "access-control-request-headers": "authorization"}  # fmt: skip
    async with running_gateway(gateway_settings(infra_env, tmp_path)) as (_, client):
        reply = await client.options("/api/v1/markets/m1", headers=preflight)
        assert "access-control-allow-origin" not in reply.headers
    allowed = gateway_settings(infra_env, tmp_path, cors_origins=["https://app.example"])
    async with running_gateway(allowed) as (_, client):
        reply = await client.options("/api/v1/markets/m1", headers=preflight)
        assert reply.headers["access-control-allow-origin"] == "https://app.example"
        other = await client.options("/api/v1/markets/m1", headers={**preflight, "origin": "https://evil.example"})
        assert other.headers.get("access-control-allow-origin") != "https://evil.example"


async def test_a_hung_upstream_leaves_the_gateway_ready(infra_env, tmp_path) -> None:
    import socket

    with socket.socket() as hung:  # accepts connections (backlog) and never answers
        hung.bind(("127.0.0.1", 0))
        hung.listen()
        url = f"http://127.0.0.1:{hung.getsockname()[1]}"
        settings = gateway_settings(infra_env, tmp_path, analytics_url=url, upstream_timeout_s=1.0)
        async with running_gateway(settings, analytics=None) as (_, client):
            ready = await client.get("/ready", headers=bearer(ADMIN_KEY))
            assert ready.status_code == 200, ready.text
            slow = await client.get("/api/v1/ai-analytics/analytics/system", headers=bearer(ADMIN_KEY))
            assert slow.status_code == 504 and slow.headers["retry-after"] == "5"
