"""The gateway's edge for REST: malformed writes refused with field detail before anything is forwarded,
date-times only as ISO 8601 strings, the Idempotency-Key passed on to ingest, and an unreachable service a
503 problem naming it."""

from __future__ import annotations

import json

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from om_cli.embedded import free_port
from om_cli.testing import cache_reads
from om_gateway.access import MATRIX, ROLES
from om_gateway.testing import ADMIN_KEY, bearer, gateway_settings, running_gateway, token
from om_gateway.upstream import Upstreams

ADMIN = bearer(ADMIN_KEY)


@pytest.mark.integration
async def test_malformed_requests_are_problems_with_field_detail(infra_env, tmp_path) -> None:
    seen: list[str] = []
    ingest = FastAPI()

    @ingest.api_route("/v1/{path:path}", methods=["GET", "POST"])
    async def record(path: str, request: Request) -> dict[str, str]:
        seen.append(path)
        return {}

    async with running_gateway(gateway_settings(infra_env, tmp_path), ingest=ingest) as (_, client):
        trade = {"market_id": "m1", "user_id": "u", "outcome": "MAYBE", "amount": -1, "shares": 1, "price": 2}
        reply = await client.post("/api/v1/trades", json=trade, headers=ADMIN)
        assert reply.status_code == 422
        assert reply.headers["content-type"] == "application/problem+json"
        assert {("body", "outcome"), ("body", "amount"), ("body", "price")} <= {
            tuple(e["loc"]) for e in reply.json()["errors"]
        }
        unknown_field = await client.post(
            "/api/v1/signals", json={"market_id": "m1", "kind": "news", "src": "x"}, headers=ADMIN
        )
        assert ("body", "src") in {tuple(e["loc"]) for e in unknown_field.json()["errors"]}
        bad_id = await client.get("/api/v1/ai-analytics/predictions/not%20an%20id", headers=ADMIN)
        assert bad_id.status_code == 422 and bad_id.json()["errors"][0]["loc"] == ["path", "market_id"]
        for number in ("1700000000", "1.5e9", "yesterday"):
            bad_time = await client.get("/api/v1/markets/m1/price-history", params={"from": number}, headers=ADMIN)
            assert bad_time.status_code == 422, number
            assert bad_time.json()["errors"][0]["loc"] == ["query", "from"]
        assert seen == []  # nothing malformed reached ingest

        ok = {"market_id": "m1", "user_id": "u", "outcome": "YES", "amount": 1, "shares": 2, "price": 0.5}
        await client.post("/api/v1/trades", json=ok, headers={**ADMIN, "idempotency-key": "retry-7"})
        assert seen == ["trades"]


@pytest.mark.integration
async def test_body_date_times_are_iso_strings_and_non_finite_numbers_are_refused(infra_env, tmp_path) -> None:
    """A number where a date-time belongs, NaN/Infinity where a number does, or a NUL character in text, is a 422
    naming the field, in the same problem shape as a 422 that ingest itself gives (translated by the gateway);
    nothing reaches ingest."""
    seen: list[str] = []
    ingest = FastAPI()

    @ingest.post("/v1/{path:path}")
    async def refuse(path: str) -> JSONResponse:
        seen.append(path)
        detail = [{"loc": ["body", "close_at"], "msg": "before the market existed", "type": "domainerror"}]
        return JSONResponse({"detail": detail}, status_code=422)

    market = {"market_id": "m1", "question": "Q?", "close_at": "2026-12-01T00:00:00Z"}
    trade = {"market_id": "m1", "user_id": "u", "outcome": "YES", "amount": 1.0, "shares": 2.0, "price": 0.5}
    bad_times = [
        ("/api/v1/markets", {**market, "close_at": 1234}, ["body", "close_at"]),
        ("/api/v1/markets", {**market, "close_at": "1234"}, ["body", "close_at"]),
        ("/api/v1/markets", {**market, "occurred_at": 1.7e9}, ["body", "occurred_at"]),
        ("/api/v1/trades", {**trade, "executed_at": 1700000000}, ["body", "executed_at"]),
        ("/api/v1/trades/batch", {"trades": [{**trade, "occurred_at": 5}]}, ["body", "trades", 0, "occurred_at"]),
        ("/api/v1/markets/m1/resolve", {"resolution": "YES", "occurred_at": 0}, ["body", "occurred_at"]),
        # and text PostgreSQL cannot store: a 422 here, not a failed write behind
        ("/api/v1/trades/batch", {"trades": [{**trade, "trade_id": "t\x00"}]}, ["body", "trades", 0, "trade_id"]),
    ]
    raw = json.dumps(trade)
    non_finite = [
        ("/api/v1/trades", raw.replace("1.0", value), ["body", "amount"]) for value in ("NaN", "Infinity", "-Infinity")
    ] + [("/api/v1/markets", json.dumps(market)[:-1] + ', "initial_price": NaN}', ["body", "initial_price"])]
    headers = {**ADMIN, "content-type": "application/json"}
    async with running_gateway(gateway_settings(infra_env, tmp_path), ingest=ingest) as (_, client):
        for path, body, loc in [(p, json.dumps(b), loc) for p, b, loc in bad_times] + non_finite:
            reply = await client.post(path, content=body, headers=headers)
            assert reply.status_code == 422, (body, reply.text)
            assert reply.headers["content-type"] == "application/problem+json"
            assert loc in [e["loc"] for e in reply.json()["errors"]], (body, reply.json())
        assert seen == []
        from_ingest = await client.post("/api/v1/markets", json=market, headers=ADMIN)
    assert seen == ["markets"] and from_ingest.status_code == 422
    # One 422 shape, whoever refused (`instance`, optional in RFC 9457, names the gateway's own route only).
    assert set(from_ingest.json()) == set(reply.json()) - {"instance"}
    assert {tuple(e) for e in from_ingest.json()["errors"]} == {tuple(e) for e in reply.json()["errors"]}


@pytest.mark.integration
async def test_idempotency_key_is_forwarded(infra_env, tmp_path) -> None:
    keys: list[str | None] = []
    ingest = FastAPI()

    @ingest.post("/v1/markets/{market_id}/close")
    async def close(market_id: str, request: Request) -> dict[str, str]:
        keys.append(request.headers.get("idempotency-key"))
        return {}

    async with running_gateway(gateway_settings(infra_env, tmp_path), ingest=ingest) as (_, client):
        await client.post("/api/v1/markets/m1/close", headers={**ADMIN, "Idempotency-Key": "k-1"})
        await client.post("/api/v1/markets/m1/close", headers=ADMIN)
    assert keys == ["k-1", None]


@pytest.mark.integration
async def test_signal_batch_takes_the_single_signal_roles_and_is_forwarded_as_sent(infra_env, tmp_path) -> None:
    forwarded: list[tuple[str | None, dict]] = []
    ingest = FastAPI()

    @ingest.post("/v1/signals/batch")
    async def batch(request: Request) -> JSONResponse:
        forwarded.append((request.headers.get("idempotency-key"), await request.json()))
        return JSONResponse({"recorded": 0, "signals": []}, status_code=201)

    signal = {
        "market_id": "m1",
        "kind": "news",
        "source": "wire",
        "text": "rain",
        "occurred_at": "2026-01-02T03:04:05Z",
    }
    body = {"signals": [signal, {**signal, "kind": "social", "signal_id": "s-2"}]}
    async with running_gateway(gateway_settings(infra_env, tmp_path), ingest=ingest) as (_, client):
        bad = await client.post(
            "/api/v1/signals/batch", json={"signals": [signal, {**signal, "kind": "?"}]}, headers=ADMIN
        )
        assert bad.status_code == 422 and ["body", "signals", 1, "kind"] in [e["loc"] for e in bad.json()["errors"]]
        assert forwarded == []
        for role in ROLES:
            reply = await client.post("/api/v1/signals/batch", json=body, headers=bearer(token(role)))
            allowed = MATRIX["signals:write"].get(role, "no") != "no"
            assert reply.status_code == (201 if allowed else 403), role
        ok = await client.post("/api/v1/signals/batch", json=body, headers={**ADMIN, "Idempotency-Key": "k-9"})
    assert ok.status_code == 201
    assert forwarded[-1] == ("k-9", body) and len(forwarded) == 1 + sum(
        MATRIX["signals:write"].get(role, "no") != "no" for role in ROLES
    )


async def test_an_unreachable_service_is_a_503_problem_naming_it() -> None:
    upstreams = Upstreams({"ingest": f"http://127.0.0.1:{free_port()}"}, timeout_s=2, retry_after_s=7)
    async with upstreams.open():
        reply = await upstreams.forward("ingest", "GET", "/v1/markets")
    assert reply.status_code == 503
    assert reply.headers["retry-after"] == "7" and reply.media_type == "application/problem+json"
    assert b'"detail":"ingest is unavailable"' in reply.body


async def test_upstream_failures_are_translated() -> None:
    answers = {
        "/boom": httpx.Response(500, text="Traceback ..."),
        "/conflict": httpx.Response(409, json={"detail": [{"loc": ["body", "x"], "msg": "closed", "type": "c"}]}),
        "/gone": httpx.Response(404, json={"detail": "no market m9"}),
    }
    transport = httpx.MockTransport(lambda request: answers[request.url.path])
    upstreams = Upstreams({"x": "http://x"}, timeout_s=2, transports={"x": transport})
    async with upstreams.open():
        boom = await upstreams.forward("x", "GET", "/boom")
        conflict = await upstreams.forward("x", "GET", "/conflict")
        gone = await upstreams.forward("x", "GET", "/gone")
    assert boom.status_code == 502 and b"Traceback" not in boom.body
    assert conflict.status_code == 409 and b'"errors":[{"loc":["body","x"],"msg":"closed","type":"c"}]' in conflict.body
    assert gone.status_code == 404 and b'"detail":"no market m9"' in gone.body


@pytest.mark.integration
async def test_a_cached_prediction_is_read_from_predictions_cache_behind_the_same_gate(infra_env, tmp_path) -> None:
    import uuid

    from redis.asyncio import Redis

    from om_contracts.caches import PREDICTION_LATEST_FIELD, prediction_latest_key

    cached, missing = f"cached-{uuid.uuid4().hex[:8]}", f"missing-{uuid.uuid4().hex[:8]}"
    body = json.dumps({"market_id": cached, "probability": 0.61, "model_version": "from-the-cache"})
    redis = Redis.from_url(infra_env["REDIS_URL"])
    await redis.hset(prediction_latest_key(cached), PREDICTION_LATEST_FIELD, body)
    try:
        async with running_gateway(gateway_settings(infra_env, tmp_path)) as (_, client):
            reads_before = cache_reads((await client.get("/metrics", headers=ADMIN)).text, "prediction-latest")
            path = f"/api/v1/ai-analytics/predictions/{cached}"
            hit = await client.get(path, headers=bearer(token("viewer")))
            assert hit.status_code == 200 and hit.text == body  # relayed as prediction cached it, not re-encoded
            assert hit.headers["content-type"] == "application/json"
            assert hit.headers["x-content-type-options"] == "nosniff"
            # The gate still runs first: no credential, no prediction, even a cached one.
            assert (await client.get(path)).status_code == 401
            # A miss asks prediction (here the stub, which answers with its own model version).
            miss = await client.get(f"/api/v1/ai-analytics/predictions/{missing}", headers=ADMIN)
            assert miss.status_code == 200 and miss.json()["model_version"] != "from-the-cache"
            # One hit and one miss at /metrics, which platform health turns into the gateway's cache hit rate.
            hits, misses = cache_reads((await client.get("/metrics", headers=ADMIN)).text, "prediction-latest")
            assert (hits - reads_before[0], misses - reads_before[1]) == (1, 1)
    finally:
        await redis.delete(prediction_latest_key(cached))
        await redis.aclose()


@pytest.mark.integration
async def test_without_redis_a_prediction_is_asked_of_prediction(infra_env, tmp_path) -> None:
    settings = gateway_settings({**infra_env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}, tmp_path)
    async with running_gateway(settings) as (_, client):
        reply = await client.get("/api/v1/ai-analytics/predictions/m1", headers=ADMIN)
        assert reply.status_code == 200 and reply.json()["market_id"] == "m1"


@pytest.mark.integration
async def test_what_the_first_requests_would_wait_for_is_done_before_serving(infra_env, tmp_path, monkeypatch) -> None:
    """Started (before any request): the OpenAPI document is built, and with it every route that FastAPI builds
    lazily, and the rate limiter is connected to Redis with its script loaded."""
    from fastapi.routing import _IncludedRouter  # (where FastAPI keeps an included router's routes, built lazily)
    from redis.asyncio import Redis

    from om_gateway.ratelimit import RateLimits

    connected: list[RateLimits] = []
    connect = RateLimits.connect

    async def spy(self: RateLimits) -> None:
        connected.append(self)
        await connect(self)

    monkeypatch.setattr(RateLimits, "connect", spy)
    async with running_gateway(gateway_settings(infra_env, tmp_path)) as (app, _):
        assert app.openapi_schema is not None
        included = [r for r in app.router.routes if isinstance(r, _IncludedRouter)]
        assert included and all(r._effective_candidates_version is not None for r in included)
        assert connected == [app.state.gate.limits]
        redis = Redis.from_url(infra_env["REDIS_URL"])
        try:
            assert await redis.script_exists(app.state.gate.limits.script.sha) == [True]
        finally:
            await redis.aclose()
