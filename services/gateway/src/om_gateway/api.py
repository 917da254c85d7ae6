"""The public REST API under /api/v1 and the live WebSocket. Queries are answered by the service that owns
the data; writes are forwarded to ingest, whose validation errors (422, with field detail) pass through."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Request, Response, WebSocket, WebSocketDisconnect

from om_gateway.live import Client, LiveHub
from om_gateway.upstream import Upstreams

MarketIdPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
JsonBody = Annotated[dict[str, Any], Body(description="See ingest's API for the fields; unknown fields get 422.")]


def router(up: Upstreams, hub: LiveHub) -> APIRouter:
    api = APIRouter(prefix="/api/v1")

    async def to_ingest(method: str, path: str, request: Request) -> Response:
        body = await request.body() if method == "POST" else None
        return await up.forward("ingest", method, f"/v1{path}", content=body, params=request.query_params)

    # --- writes and reads of the system of record (ingest) ---------------------------------------

    @api.post("/markets", tags=["markets"], status_code=201, summary="Create a market")
    async def create_market(request: Request, _: JsonBody) -> Response:
        return await to_ingest("POST", "/markets", request)

    @api.get("/markets", tags=["markets"], summary="List markets (filter with ?status=open)")
    async def list_markets(request: Request) -> Response:
        return await to_ingest("GET", "/markets", request)

    @api.get("/markets/{market_id}", tags=["markets"], summary="One market")
    async def get_market(market_id: MarketIdPath, request: Request) -> Response:
        return await to_ingest("GET", f"/markets/{market_id}", request)

    @api.get("/markets/{market_id}/trades", tags=["markets"], summary="A market's latest trades")
    async def market_trades(market_id: MarketIdPath, request: Request) -> Response:
        return await to_ingest("GET", f"/markets/{market_id}/trades", request)

    for action in ("close", "resolve", "cancel"):

        async def lifecycle(market_id: MarketIdPath, request: Request, _action: str = action) -> Response:
            return await to_ingest("POST", f"/markets/{market_id}/{_action}", request)

        api.add_api_route(
            f"/markets/{{market_id}}/{action}",
            lifecycle,
            methods=["POST"],
            tags=["markets"],
            summary=f"{action.capitalize()} a market",
        )

    @api.post("/trades", tags=["trades"], status_code=201, summary="Record a trade")
    async def record_trade(request: Request, _: JsonBody) -> Response:
        return await to_ingest("POST", "/trades", request)

    @api.post("/trades/batch", tags=["trades"], status_code=201, summary="Record up to 1000 trades at once")
    async def record_trades(request: Request, _: JsonBody) -> Response:
        return await to_ingest("POST", "/trades/batch", request)

    @api.post("/signals", tags=["signals"], status_code=201, summary="Record a social or news signal")
    async def record_signal(request: Request, _: JsonBody) -> Response:
        return await to_ingest("POST", "/signals", request)

    # --- AI analytics (prediction and analytics services) ----------------------------------------

    @api.get("/ai-analytics/predictions/{market_id}", tags=["ai-analytics"], summary="A market's prediction")
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

    @api.get("/ai-analytics/analytics/system", tags=["ai-analytics"], summary="Platform metrics, top markets")
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
