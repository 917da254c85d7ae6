"""The public REST API under /api/v1 and the live WebSocket. Queries are answered by the service that owns
the data. Writes are validated here against the shared API models (om_contracts.api), so bad input gets its 422
at the edge, then forwarded to ingest, whose rule violations (404, 409) pass through."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response, WebSocket, WebSocketDisconnect

from om_contracts import PredictionMade, SystemMetricsUpdated
from om_contracts.api import (
    CancelIn,
    MarketIn,
    MarketOut,
    ResolveIn,
    SignalIn,
    SignalOut,
    TradeBatchIn,
    TradeBatchOut,
    TradeIn,
    TradeOut,
)
from om_gateway.live import Client, LiveHub
from om_gateway.upstream import Upstreams

MarketIdPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "Unknown market"},
    409: {"description": "Conflicts with the market's state, or a replayed id with different fields"},
}


def router(up: Upstreams, hub: LiveHub) -> APIRouter:
    api = APIRouter(prefix="/api/v1")

    async def to_ingest(method: str, path: str, request: Request) -> Response:
        body = await request.body() if method == "POST" else None
        return await up.forward("ingest", method, f"/v1{path}", content=body, params=request.query_params)

    # --- writes and reads of the system of record (ingest) ---------------------------------------

    # The body parameters (`_`) make FastAPI validate and document the request; the original bytes go on.

    @api.post("/markets", tags=["markets"], status_code=201, response_model=MarketOut, responses=ERRORS)
    async def create_market(request: Request, _: MarketIn) -> Response:
        """Create a binary market, open for trading until `close_at`."""
        return await to_ingest("POST", "/markets", request)

    @api.get("/markets", tags=["markets"], response_model=list[MarketOut])
    async def list_markets(
        request: Request,
        status: Literal["open", "closed", "resolved", "cancelled"] | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> Response:
        """List markets, newest first."""
        return await to_ingest("GET", "/markets", request)

    @api.get("/markets/{market_id}", tags=["markets"], response_model=MarketOut, responses=ERRORS)
    async def get_market(market_id: MarketIdPath, request: Request) -> Response:
        """One market, with its current price and status."""
        return await to_ingest("GET", f"/markets/{market_id}", request)

    @api.get("/markets/{market_id}/trades", tags=["markets"], response_model=list[TradeOut])
    async def market_trades(
        market_id: MarketIdPath, request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> Response:
        """A market's latest trades, newest first."""
        return await to_ingest("GET", f"/markets/{market_id}/trades", request)

    @api.post("/markets/{market_id}/close", tags=["markets"], response_model=MarketOut, responses=ERRORS)
    async def close_market(market_id: MarketIdPath, request: Request) -> Response:
        """Stop trading; the outcome is not known yet."""
        return await to_ingest("POST", f"/markets/{market_id}/close", request)

    @api.post("/markets/{market_id}/resolve", tags=["markets"], response_model=MarketOut, responses=ERRORS)
    async def resolve_market(market_id: MarketIdPath, request: Request, _: ResolveIn) -> Response:
        """Settle the market: YES (1), NO (0) or MKT at a probability."""
        return await to_ingest("POST", f"/markets/{market_id}/resolve", request)

    @api.post("/markets/{market_id}/cancel", tags=["markets"], response_model=MarketOut, responses=ERRORS)
    async def cancel_market(market_id: MarketIdPath, request: Request, _: CancelIn | None = None) -> Response:
        """Void the market; it will have no outcome."""
        return await to_ingest("POST", f"/markets/{market_id}/cancel", request)

    @api.post(
        "/trades",
        tags=["trades"],
        status_code=201,
        response_model=TradeOut,
        responses={**ERRORS, 200: {"description": "Replay of a recorded trade_id; nothing changed"}},
    )
    async def record_trade(request: Request, _: TradeIn) -> Response:
        """Record a trade; `trade_id` makes retries safe."""
        return await to_ingest("POST", "/trades", request)

    @api.post("/trades/batch", tags=["trades"], status_code=201, response_model=TradeBatchOut, responses=ERRORS)
    async def record_trades(request: Request, _: TradeBatchIn) -> Response:
        """Record up to 1000 trades at once: all of them, or none if any breaks a rule."""
        return await to_ingest("POST", "/trades/batch", request)

    @api.post(
        "/signals",
        tags=["signals"],
        status_code=201,
        response_model=SignalOut,
        responses={**ERRORS, 200: {"description": "Replay of a recorded signal_id; nothing changed"}},
    )
    async def record_signal(request: Request, _: SignalIn) -> Response:
        """Record a social post or news item about a market."""
        return await to_ingest("POST", "/signals", request)

    # --- AI analytics (prediction and analytics services) ----------------------------------------

    @api.get(
        "/ai-analytics/predictions/{market_id}",
        tags=["ai-analytics"],
        summary="A market's prediction",
        response_model=PredictionMade,
        responses={404: {"description": "No prediction for this market yet"}},
    )
    async def prediction(market_id: MarketIdPath) -> Response:
        return await up.forward("prediction", "GET", f"/v1/markets/{market_id}/prediction")

    @api.get("/ai-analytics/predictions/{market_id}/history", tags=["ai-analytics"], summary="Prediction history")
    async def prediction_history(
        market_id: MarketIdPath, limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> Response:
        return await up.forward("prediction", "GET", f"/v1/markets/{market_id}/predictions", params={"limit": limit})

    @api.get("/ai-analytics/analytics/market/{market_id}", tags=["ai-analytics"], summary="A market's metrics")
    async def market_analytics(market_id: MarketIdPath) -> Response:
        return await up.forward("analytics", "GET", f"/v1/markets/{market_id}/metrics")

    @api.get(
        "/ai-analytics/analytics/system",
        tags=["ai-analytics"],
        summary="Platform metrics, top markets",
        response_model=SystemMetricsUpdated,
    )
    async def system_analytics() -> Response:
        return await up.forward("analytics", "GET", "/v1/system/metrics")

    @api.websocket("/ai-analytics/ws/analytics/{client_id}")
    async def live(websocket: WebSocket, client_id: str) -> None:
        """Pushes `analytics_update` on every platform change (at most once a second). Send
        `{"type": "subscribe", "market_ids": [...]}` to also receive `market_update` for those markets."""
        await websocket.accept()
        client = hub.connect(client_id)
        sender = asyncio.create_task(_send(websocket, client))
        try:
            while True:
                _handle(client, await websocket.receive_text())
        except WebSocketDisconnect:
            pass
        finally:
            hub.disconnect(client)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender

    return api


async def _send(websocket: WebSocket, client: Client) -> None:
    while True:
        await websocket.send_json(await client.queue.get())


def _market_ids(message: dict[str, Any]) -> list[str]:
    ids = message["market_ids"]
    if not isinstance(ids, list) or not all(isinstance(i, str | int) and not isinstance(i, bool) for i in ids):
        raise TypeError("market_ids must be a list of market ids")
    return [str(i) for i in ids]


def _handle(client: Client, text: str) -> None:
    """Client messages: subscribe/unsubscribe to markets, ping. Anything else gets an error message back."""
    try:
        message = json.loads(text)
        kind = message["type"]
        if kind == "subscribe":
            client.markets.update(_market_ids(message))
        elif kind == "unsubscribe":
            client.markets.difference_update(_market_ids(message))
        elif kind == "ping":
            client.offer({"type": "pong"})
        else:
            raise ValueError(f"unknown message type {kind!r}")
    except (ValueError, KeyError, TypeError) as exc:
        client.offer({"type": "error", "detail": f"bad message: {exc}"})
