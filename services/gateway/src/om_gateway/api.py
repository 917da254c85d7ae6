"""The public REST API under /api/v1. Queries are answered by the service that owns the data (ingest: markets
and trades; prediction: predictions and models; analytics: metrics, candles, leaderboards, insights). Writes are
validated here against the shared API models (om_contracts.api), so bad input gets its 422 at the edge, then
forwarded to ingest with the caller's `Idempotency-Key`. Every error is a problem (see problems.py)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Header, HTTPException, Path, Query, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

from om_contracts import PredictionMade, SystemMetricsUpdated
from om_contracts.api import (
    CancelIn,
    IsoDateTime,
    MarketIn,
    MarketOut,
    ResolveIn,
    SignalBatchIn,
    SignalBatchOut,
    SignalIn,
    SignalOut,
    TradeBatchIn,
    TradeBatchOut,
    TradeIn,
    TradeOut,
)
from om_contracts.caches import PREDICTION_LATEST_FIELD as LATEST_FIELD
from om_contracts.caches import prediction_latest_key
from om_gateway.access import Role
from om_gateway.auth import Principal
from om_gateway.guard import Gate, require_own
from om_gateway.problems import documented
from om_gateway.upstream import Upstreams
from om_runtime.cache import CacheReads

ID_PATTERN = r"^[A-Za-z0-9_.:-]+$"
MarketIdPath = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN, examples=["will-it-rain-tomorrow"])]
UserIdPath = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN, examples=["user-42"])]
FromQuery = Annotated[
    IsoDateTime | None,
    Query(alias="from", description="Start (inclusive), ISO 8601 with offset.", examples=["2026-11-24T00:00:00Z"]),
]
ToQuery = Annotated[
    IsoDateTime | None,
    Query(description="End (exclusive), ISO 8601 with offset.", examples=["2026-11-25T00:00:00Z"]),
]
Cursor = Annotated[str | None, Query(max_length=512, description="`next_cursor` of the previous page.")]
IdempotencyKey = Annotated[
    str | None,
    Header(
        max_length=128,
        description="Makes a retried write safe: ingest stores the key and answers a repeat with the first result.",
    ),
]

AUTH = (401, 403, 429)
UPSTREAM = (400, 502, 503, 504)
READ = documented(*AUTH, 422, *UPSTREAM)
READ_ONE = documented(*AUTH, 404, 422, *UPSTREAM)
WRITE = documented(*AUTH, 404, 409, 413, 422, *UPSTREAM)
#: Reads of prediction's cached predictions (om_contracts.caches) at /metrics, for platform health's cache hit rate.
PREDICTION_READS = CacheReads("prediction-latest")


_TRADE = {"market_id": "will-it-rain-tomorrow", "user_id": "user-42", "outcome": "YES", "side": "BUY", "amount": 30.0,
          "shares": 50.0, "price": 0.6, "trade_id": "t-000123"}  # fmt: skip
#: Request body examples, shown in the OpenAPI document (and tried first by API fuzzers).
MarketBody = Annotated[MarketIn, Body(openapi_examples={"market": {"value": {
    "market_id": "will-it-rain-tomorrow", "question": "Will it rain in Paris tomorrow?", "category": "weather",
    "close_at": "2026-12-01T00:00:00Z", "initial_price": 0.5}}})]  # fmt: skip
ResolveBody = Annotated[ResolveIn, Body(openapi_examples={
    "yes": {"value": {"resolution": "YES"}},
    "at a price": {"value": {"resolution": "MKT", "resolution_price": 0.3}}})]  # fmt: skip
CancelBody = Annotated[
    CancelIn | None, Body(openapi_examples={"reason": {"value": {"reason": "question was ambiguous"}}})
]
TradeBody = Annotated[TradeIn, Body(openapi_examples={"buy YES": {"value": _TRADE}})]
TradeBatchBody = Annotated[TradeBatchIn, Body(openapi_examples={"two": {"value": {"trades": [
    _TRADE, {**_TRADE, "trade_id": "t-000124", "outcome": "NO", "price": 0.55}]}}})]  # fmt: skip
SignalBody = Annotated[SignalIn, Body(openapi_examples={"news": {"value": {
    "market_id": "will-it-rain-tomorrow", "kind": "news", "source": "meteo-france",
    "text": "Heavy rain expected over Paris tomorrow", "sentiment": 0.4}}})]  # fmt: skip

SignalBatchBody = Annotated[SignalBatchIn, Body(openapi_examples={"two": {"value": {"signals": [
    {"market_id": "will-it-rain-tomorrow", "kind": "news", "source": "meteo-france", "signal_id": "s-000123",
     "text": "Heavy rain expected over Paris tomorrow", "sentiment": 0.4},
    {"market_id": "will-it-rain-tomorrow", "kind": "social", "source": "social-feed", "signal_id": "s-000124",
     "text": "Sunny skies all day!", "sentiment": -0.3}]}}})]  # fmt: skip


class Page(BaseModel):
    items: list[dict[str, Any]]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last.")


class BatchIn(BaseModel):
    market_ids: list[Annotated[str, Field(min_length=1, max_length=64, pattern=ID_PATTERN)]] = Field(
        min_length=1, max_length=1000, examples=[["will-it-rain-tomorrow", "election-2028"]]
    )


class BatchOut(BaseModel):
    predictions: dict[str, dict[str, Any]]
    errors: dict[str, dict[str, Any]] = Field(description="Per market id: its status and detail (e.g. 404).")


def _params(**values: Any) -> dict[str, str]:
    out = {}
    for key, value in values.items():
        if value is None:
            continue
        out[key] = value.isoformat() if isinstance(value, datetime) else str(value)
    return out


def router(up: Upstreams, gate: Gate) -> APIRouter:
    api = APIRouter(prefix="/api/v1")
    read_markets = Depends(gate("markets:read"))
    write_markets = Depends(gate("markets:write"))
    read_predictions = Depends(gate("predictions:read"))
    read_cached_prediction = Depends(
        gate("predictions:read", read=lambda r: (prediction_latest_key(r.path_params["market_id"]), LATEST_FIELD))
    )
    read_analytics = Depends(gate("analytics:read"))
    read_models = Depends(gate("models:read"))
    write_trades = Depends(gate("trades:write"))
    read_users = Depends(gate("users:read"))

    async def to_ingest(path: str, request: Request, body: bytes | None = None) -> Response:
        method = request.method
        if method == "POST" and body is None:
            body = await request.body()
        return await up.forward(
            "ingest", method, f"/v1{path}", content=body, params=request.query_params, headers=request.headers
        )

    # --- markets and trades (ingest; listing and history from analytics) ----------------------------

    @api.post(
        "/markets",
        tags=["markets"],
        status_code=201,
        response_model=MarketOut,
        responses=WRITE,
        dependencies=[write_markets],
    )
    async def create_market(request: Request, _: MarketBody, idempotency_key: IdempotencyKey = None) -> Response:
        """Create a binary market, open for trading until `close_at`. Roles: admin, service."""
        return await to_ingest("/markets", request)

    @api.get("/markets", tags=["markets"], response_model=Page, responses=READ, dependencies=[read_markets])
    async def list_markets(
        status: Literal["open", "closed", "resolved", "cancelled"] | None = None,
        category: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
        sort: Literal["volume_24h", "liquidity", "close_at"] = "volume_24h",
        order: Literal["asc", "desc"] = "desc",
        cursor: Cursor = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> Response:
        """Markets with their metrics, filtered by status/category, sorted by 24 h volume, liquidity or close
        time; pages of `limit` with a cursor."""
        params = _params(status=status, category=category, sort=sort, order=order, cursor=cursor, limit=limit)
        return await up.forward("analytics", "GET", "/v1/markets", params=params)

    @api.get(
        "/markets/{market_id}",
        tags=["markets"],
        response_model=MarketOut,
        responses=READ_ONE,
        dependencies=[read_markets],
    )
    async def get_market(market_id: MarketIdPath, request: Request) -> Response:
        """One market: question, status, current price."""
        return await to_ingest(f"/markets/{market_id}", request)

    @api.get(
        "/markets/{market_id}/trades",
        tags=["markets"],
        response_model=list[TradeOut],
        responses=READ_ONE,
        dependencies=[read_markets],
    )
    async def market_trades(
        market_id: MarketIdPath, request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> Response:
        """A market's latest trades, newest first."""
        return await to_ingest(f"/markets/{market_id}/trades", request)

    @api.get("/markets/{market_id}/candles", tags=["markets"], responses=READ_ONE, dependencies=[read_markets])
    async def market_candles(
        market_id: MarketIdPath,
        timeframe: Literal["1h", "24h", "7d", "30d"] = "24h",
        resolution: Literal["1m", "1h", "1d"] | None = None,
        from_: FromQuery = None,
        to: ToQuery = None,
    ) -> Response:
        """Open/high/low/close price and volume per interval over a timeframe."""
        params = _params(timeframe=timeframe, resolution=resolution, **{"from": from_}, to=to)
        return await up.forward("analytics", "GET", f"/v1/markets/{market_id}/candles", params=params)

    @api.get("/markets/{market_id}/price-history", tags=["markets"], responses=READ_ONE, dependencies=[read_markets])
    async def price_history(market_id: MarketIdPath, from_: FromQuery = None, to: ToQuery = None) -> Response:
        """Every price the market traded at in the range, oldest first."""
        params = _params(**{"from": from_}, to=to)
        return await up.forward("analytics", "GET", f"/v1/markets/{market_id}/price-history", params=params)

    @api.post(
        "/markets/{market_id}/close",
        tags=["markets"],
        response_model=MarketOut,
        responses=WRITE,
        dependencies=[write_markets],
    )
    async def close_market(
        market_id: MarketIdPath, request: Request, idempotency_key: IdempotencyKey = None
    ) -> Response:
        """Stop trading; the outcome is not known yet."""
        return await to_ingest(f"/markets/{market_id}/close", request)

    @api.post(
        "/markets/{market_id}/resolve",
        tags=["markets"],
        response_model=MarketOut,
        responses=WRITE,
        dependencies=[write_markets],
    )
    async def resolve_market(
        market_id: MarketIdPath, request: Request, _: ResolveBody, idempotency_key: IdempotencyKey = None
    ) -> Response:
        """Settle the market: YES (1), NO (0) or MKT at a probability."""
        return await to_ingest(f"/markets/{market_id}/resolve", request)

    @api.post(
        "/markets/{market_id}/cancel",
        tags=["markets"],
        response_model=MarketOut,
        responses=WRITE,
        dependencies=[write_markets],
    )
    async def cancel_market(
        market_id: MarketIdPath, request: Request, _: CancelBody = None, idempotency_key: IdempotencyKey = None
    ) -> Response:
        """Void the market; it will have no outcome."""
        return await to_ingest(f"/markets/{market_id}/cancel", request)

    @api.post(
        "/trades",
        tags=["trades"],
        status_code=201,
        response_model=TradeOut,
        responses={**WRITE, 200: {"description": "Replay of a recorded trade_id; nothing changed"}},
    )
    async def record_trade(
        request: Request,
        trade: TradeBody,
        principal: Principal = write_trades,
        idempotency_key: IdempotencyKey = None,
    ) -> Response:
        """Record a trade; `trade_id` (or `Idempotency-Key`) makes retries safe. A trader records only their own."""
        _own_trades(principal, [trade])
        return await to_ingest("/trades", request)

    @api.post("/trades/batch", tags=["trades"], status_code=201, response_model=TradeBatchOut, responses=WRITE)
    async def record_trades(
        request: Request,
        batch: TradeBatchBody,
        principal: Principal = write_trades,
        idempotency_key: IdempotencyKey = None,
    ) -> Response:
        """Record up to 1000 trades at once: all of them, or none if any breaks a rule."""
        _own_trades(principal, batch.trades)
        return await to_ingest("/trades/batch", request)

    @api.post(
        "/signals",
        tags=["signals"],
        status_code=201,
        response_model=SignalOut,
        responses={**WRITE, 200: {"description": "Replay of a recorded signal_id; nothing changed"}},
        dependencies=[Depends(gate("signals:write"))],
    )
    async def record_signal(request: Request, _: SignalBody, idempotency_key: IdempotencyKey = None) -> Response:
        """Record a social post or news item about a market."""
        return await to_ingest("/signals", request)

    @api.post(
        "/signals/batch",
        tags=["signals"],
        status_code=201,
        response_model=SignalBatchOut,
        responses=WRITE,
        dependencies=[Depends(gate("signals:write"))],
    )
    async def record_signals(request: Request, _: SignalBatchBody, idempotency_key: IdempotencyKey = None) -> Response:
        """Record up to 1000 signals at once: all of them, or none if any breaks a rule."""
        return await to_ingest("/signals/batch", request)

    @api.get("/leaderboards", tags=["analytics"], responses=READ, dependencies=[read_markets])
    async def leaderboard(
        by: Literal["pnl", "volume", "success_rate"] = "pnl", limit: Annotated[int, Query(ge=1, le=100)] = 10
    ) -> Response:
        """Top traders by profit and loss, volume or share of winning positions."""
        return await up.forward("analytics", "GET", "/v1/leaderboard", params=_params(by=by, limit=limit))

    @api.get("/models", tags=["models"], responses=READ, dependencies=[read_models])
    async def models() -> Response:
        """Model versions: which is active, when trained, their evaluation."""
        return await up.forward("prediction", "GET", "/v1/models")

    @api.get("/models/{version}", tags=["models"], responses=READ_ONE, dependencies=[read_models])
    async def model(version: Annotated[str, Path(min_length=1, max_length=128, pattern=ID_PATTERN)]) -> Response:
        """One model version."""
        return await up.forward("prediction", "GET", f"/v1/models/{version}")

    # --- AI analytics (the product document's endpoints) ---------------------------------------------

    ai = "/ai-analytics"

    @api.get(
        f"{ai}/predictions/{{market_id}}",
        tags=["ai-analytics"],
        summary="A market's prediction",
        response_model=PredictionMade,
        responses=READ_ONE,
        dependencies=[read_cached_prediction],
    )
    async def prediction(market_id: MarketIdPath, request: Request) -> Response:
        # Read from prediction's cache in the rate limit's round trip (om_contracts.caches); a miss asks prediction.
        if (cached := PREDICTION_READS.seen(request.state.prefetched)) is not None:
            return Response(cached, media_type="application/json")
        return await up.forward("prediction", "GET", f"/v1/markets/{market_id}/prediction")

    @api.post(
        f"{ai}/predictions/batch",
        tags=["ai-analytics"],
        summary="Predictions of many markets",
        response_model=BatchOut,
        responses=READ,
        dependencies=[read_predictions],
    )
    async def prediction_batch(body: BatchIn) -> Response:
        content = json.dumps({"market_ids": list(dict.fromkeys(body.market_ids))}).encode()
        return await up.forward("prediction", "POST", "/v1/predictions/batch", content=content)

    @api.get(
        f"{ai}/predictions/{{market_id}}/history",
        tags=["ai-analytics"],
        summary="Prediction history",
        response_model=Page,
        responses=READ_ONE,
        dependencies=[read_predictions],
    )
    async def prediction_history(
        market_id: MarketIdPath,
        from_: FromQuery = None,
        to: ToQuery = None,
        cursor: Cursor = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> Response:
        params = _params(**{"from": from_}, to=to, cursor=cursor, limit=limit)
        return await up.forward("prediction", "GET", f"/v1/markets/{market_id}/predictions", params=params)

    @api.get(
        f"{ai}/analytics/market/{{market_id}}",
        tags=["ai-analytics"],
        summary="A market's metrics",
        responses=READ_ONE,
        dependencies=[read_analytics],
    )
    async def market_analytics(market_id: MarketIdPath) -> Response:
        return await up.forward("analytics", "GET", f"/v1/markets/{market_id}/metrics")

    @api.get(f"{ai}/analytics/user/{{user_id}}", tags=["ai-analytics"], summary="A user's metrics", responses=READ_ONE)
    async def user_analytics(user_id: UserIdPath, principal: Principal = read_users) -> Response:
        require_own(principal, "users:read", user_id)
        return await up.forward("analytics", "GET", f"/v1/users/{user_id}/metrics")

    @api.get(
        f"{ai}/analytics/user/{{user_id}}/portfolio",
        tags=["ai-analytics"],
        summary="A user's positions",
        responses=READ_ONE,
    )
    async def user_portfolio(user_id: UserIdPath, principal: Principal = read_users) -> Response:
        require_own(principal, "users:read", user_id)
        return await up.forward("analytics", "GET", f"/v1/users/{user_id}/portfolio")

    @api.get(
        f"{ai}/analytics/system",
        tags=["ai-analytics"],
        summary="Platform metrics, top markets",
        response_model=SystemMetricsUpdated,
        responses=READ,
        dependencies=[read_analytics],
    )
    async def system_analytics() -> Response:
        return await up.forward("analytics", "GET", "/v1/system/metrics")

    @api.get(
        f"{ai}/analytics/system/health",
        tags=["ai-analytics"],
        summary="Each service's health",
        responses=READ,
        dependencies=[read_analytics],
    )
    async def system_health() -> Response:
        return await up.forward("analytics", "GET", "/v1/system/health")

    @api.get(
        f"{ai}/analytics/calibration",
        tags=["ai-analytics"],
        summary="How well predictions were calibrated",
        responses=READ,
        dependencies=[read_analytics],
    )
    async def calibration(category: Annotated[str | None, Query(min_length=1, max_length=64)] = None) -> Response:
        return await up.forward("analytics", "GET", "/v1/calibration", params=_params(category=category))

    @api.get(
        f"{ai}/insights/market/{{market_id}}",
        tags=["ai-analytics"],
        summary="Everything about a market",
        responses=READ_ONE,
        dependencies=[read_analytics],
    )
    async def market_insights(market_id: MarketIdPath) -> Response:
        return await up.forward("analytics", "GET", f"/v1/insights/market/{market_id}")

    @api.get(
        f"{ai}/insights/portfolio/{{user_id}}",
        tags=["ai-analytics"],
        summary="A user's portfolio insights",
        responses=READ_ONE,
    )
    async def portfolio_insights(user_id: UserIdPath, principal: Principal = read_users) -> Response:
        require_own(principal, "users:read", user_id)
        return await up.forward("analytics", "GET", f"/v1/insights/portfolio/{user_id}")

    _name_operations_and_link_markets(api)
    return api


#: Operations that take the `market_id` a created market answers with (OpenAPI links, used by API fuzzers).
LINKED_TO_NEW_MARKET = (
    "get_market", "market_trades", "market_candles", "price_history", "close_market", "resolve_market",
    "cancel_market", "prediction", "prediction_history", "market_analytics", "market_insights",
)  # fmt: skip


def _name_operations_and_link_markets(api: APIRouter) -> None:
    for route in api.routes:
        if isinstance(route, APIRoute):
            route.operation_id = route.name
            if route.name == "create_market":
                route.responses[201] = {
                    "description": "The market, as recorded",
                    "links": {
                        name: {"operationId": name, "parameters": {"market_id": "$response.body#/market_id"}}
                        for name in LINKED_TO_NEW_MARKET
                    },
                }


def _own_trades(principal: Principal, trades: list[TradeIn]) -> None:
    if principal.role is Role.trader and any(t.user_id != principal.subject for t in trades):
        raise HTTPException(403, f"a trader records only their own trades (user_id {principal.subject!r})")
