"""ingest's internal HTTP API (reached through the gateway, never exposed outside the cluster)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import JSONResponse

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
from om_ingest import store
from om_ingest.commands import Ingest
from om_ingest.domain import DomainError, NotFound

ERRORS = {404: {"description": "Not found"}, 409: {"description": "Conflicts with the market's state"}}


def domain_error_response(_: Request, exc: Exception) -> JSONResponse:
    """Shape rule violations like FastAPI's validation errors: a list of {loc, msg, type}."""
    # bandit: narrows the type for mypy; the handler is registered for DomainError only
    assert isinstance(exc, DomainError)  # nosec B101
    loc = [exc.location, *(exc.field.split(".") if exc.field else [])]
    kind = type(exc).__name__.lower()
    return JSONResponse({"detail": [{"loc": loc, "msg": exc.message, "type": kind}]}, status_code=exc.status_code)


def router(ingest: Ingest) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["ingest"], responses=ERRORS)

    @api.post("/markets", status_code=status.HTTP_201_CREATED, response_model=MarketOut)
    async def create_market(body: MarketIn) -> dict:
        return await ingest.create_market(body)

    @api.get("/markets", response_model=list[MarketOut])
    async def list_markets(
        status_: Annotated[Literal["open", "closed", "resolved", "cancelled"] | None, Query(alias="status")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> list[dict]:
        async with ingest.db.transaction() as conn:
            return await store.list_markets(conn, status_, limit, offset)

    @api.get("/markets/{market_id}", response_model=MarketOut)
    async def get_market(market_id: str) -> dict:
        async with ingest.db.transaction() as conn:
            row = await store.market_row(conn, market_id)
        if row is None:
            raise NotFound(f"market {market_id!r} does not exist", field="market_id", location="path")
        return row

    @api.get("/markets/{market_id}/trades", response_model=list[TradeOut])
    async def market_trades(market_id: str, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict]:
        async with ingest.db.transaction() as conn:
            return await store.recent_trades(conn, market_id, limit)

    @api.post("/markets/{market_id}/close", response_model=MarketOut)
    async def close_market(market_id: str) -> dict:
        return await ingest.close_market(market_id)

    @api.post("/markets/{market_id}/resolve", response_model=MarketOut)
    async def resolve_market(market_id: str, body: ResolveIn) -> dict:
        return await ingest.resolve_market(market_id, body)

    @api.post("/markets/{market_id}/cancel", response_model=MarketOut)
    async def cancel_market(market_id: str, body: CancelIn | None = None) -> dict:
        return await ingest.cancel_market(market_id, body or CancelIn())

    @api.post(
        "/trades",
        status_code=status.HTTP_201_CREATED,
        response_model=TradeOut,
        responses={200: {"description": "Replay of a trade_id already recorded; nothing changed"}},
    )
    async def record_trade(body: TradeIn, response: Response) -> dict:
        recorded, [trade] = await ingest.record_trades([body])
        if not recorded:
            response.status_code = status.HTTP_200_OK
        return trade

    @api.post("/trades/batch", status_code=status.HTTP_201_CREATED, response_model=TradeBatchOut)
    async def record_trades(body: TradeBatchIn) -> dict:
        recorded, trades = await ingest.record_trades(body.trades)
        return {"recorded": recorded, "trades": trades}

    @api.post(
        "/signals",
        status_code=status.HTTP_201_CREATED,
        response_model=SignalOut,
        responses={200: {"description": "Replay of a signal_id already recorded; nothing changed"}},
    )
    async def record_signal(body: SignalIn, response: Response) -> dict:
        signal, new = await ingest.record_signal(body)
        if not new:
            response.status_code = status.HTTP_200_OK
        return signal

    return api
