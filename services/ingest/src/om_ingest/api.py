"""ingest's internal HTTP API (reached through the gateway, never exposed outside the cluster).

Handlers are thin: parse, run one use case of `commands.Ingest` in a transaction (with the `Idempotency-Key`
bookkeeping), and shape the reply with the shared response models."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from pydantic_core import to_json

from om_contracts.api import (
    CancelIn,
    CloseIn,
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
from om_ingest import store
from om_ingest.commands import IdempotencyKey, Ingest, Reply
from om_ingest.domain import DomainError, NotFound
from om_ingest.store import Conn

IDEMPOTENCY_TTL_DOC = "INGEST_IDEMPOTENCY_TTL_S (default 86,400 s = 24 h)"
IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description=(
            "Makes a retry safe. Stored in the write's own transaction: the same key with the same request "
            "(method, path and body) replays the first reply (same status and body, header "
            "`Idempotency-Replayed: true`) without writing again; the same key with a different request is a 409. "
            f"Keys expire after {IDEMPOTENCY_TTL_DOC}. A refused write (4xx) stores nothing."
        ),
    ),
]

WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "Unknown market"},
    409: {
        "description": "Conflicts with the market's state; an id (trade_id, signal_id, market_id) reused with "
        "different fields, or recorded concurrently by another request; or an Idempotency-Key reused with a "
        "different request"
    },
    422: {
        "description": "Invalid input, with field-level detail: a missing or malformed field, a number that is not "
        "finite (NaN, Infinity) or out of bounds, an event time too far in the future or before the market existed"
    },
}
READ_ERRORS: dict[int | str, dict[str, Any]] = {404: {"description": "Not found"}}


def domain_error_response(_: Request, exc: Exception) -> JSONResponse:
    """Shape rule violations like FastAPI's validation errors: a list of {loc, msg, type}."""
    # bandit: narrows the type for mypy; the handler is registered for DomainError only
    assert isinstance(exc, DomainError)  # nosec B101
    loc = [exc.location, *(exc.field.split(".") if exc.field else [])]
    kind = type(exc).__name__.lower()
    return JSONResponse({"detail": [{"loc": loc, "msg": exc.message, "type": kind}]}, status_code=exc.status_code)


def validation_error_response(_: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422, but safe for inputs JSON cannot carry back (a body's `NaN` would otherwise fail the
    response itself with a 500): non-finite numbers in the echoed input are given as strings."""
    if not isinstance(exc, RequestValidationError):  # registered for that type only
        raise exc
    return JSONResponse({"detail": _finite(jsonable_encoder(exc.errors()))}, status_code=422)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


class WriteResponse(JSONResponse):
    """A write's reply, encoded by pydantic-core: the same bytes as JSONResponse's `json.dumps`, at about a fifth of
    its cost (a 250-trade batch reply: 1.7 against 8.1 µs per trade), which was ingest's largest per-trade item in
    the batch path after validation."""

    def render(self, content: Any) -> bytes:
        return to_json(content)


def _json(model: type[BaseModel], row: Any) -> Any:
    return model.model_validate(row).model_dump(mode="json")


def router(ingest: Ingest) -> APIRouter:
    """The routes; queries read from the replica when DATABASE_READ_URL is set, writes go to the primary."""
    api = APIRouter(prefix="/v1", tags=["ingest"])
    reads = ingest.db

    async def run(
        request: Request,
        key: str | None,
        body: BaseModel | None,
        apply: Callable[[Conn, datetime], Awaitable[Reply]],
    ) -> JSONResponse:
        idem = None
        if key is not None:
            canonical = body.model_dump_json() if body is not None else ""
            idem = IdempotencyKey.of(key, request.method, request.url.path, canonical)
        reply, replayed = await ingest.write(idem, apply)
        headers = {"Idempotency-Replayed": "true"} if replayed else None
        return WriteResponse(reply.body, status_code=reply.status, headers=headers)

    @api.post("/markets", status_code=status.HTTP_201_CREATED, response_model=MarketOut, responses=WRITE_ERRORS)
    async def create_market(body: MarketIn, request: Request, key: IdempotencyKeyHeader = None) -> JSONResponse:
        """Open a market (409 if its `market_id` exists)."""

        async def apply(conn: Conn, now: datetime) -> Reply:
            row, _ = await ingest.create_market(conn, body, now)
            return Reply(201, _json(MarketOut, row))

        return await run(request, key, body, apply)

    @api.get("/markets", response_model=list[MarketOut])
    async def list_markets(
        status_: Annotated[Literal["open", "closed", "resolved", "cancelled"] | None, Query(alias="status")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> list[dict[str, Any]]:
        async with reads.reading() as conn:
            return await store.list_markets(conn, status_, limit, offset)

    @api.get("/markets/{market_id}", response_model=MarketOut, responses=READ_ERRORS)
    async def get_market(market_id: str) -> dict[str, Any]:
        async with reads.reading() as conn:
            row = await store.market_row(conn, market_id)
        if row is None:
            raise NotFound(f"market {market_id!r} does not exist", field="market_id", location="path")
        return row

    @api.get("/markets/{market_id}/trades", response_model=list[TradeOut])
    async def market_trades(market_id: str, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
        async with reads.reading() as conn:
            return await store.recent_trades(conn, market_id, limit)

    @api.post("/markets/{market_id}/close", response_model=MarketOut, responses=WRITE_ERRORS)
    async def close_market(
        market_id: str, request: Request, body: CloseIn | None = None, key: IdempotencyKeyHeader = None
    ) -> JSONResponse:
        """Stop trading (only an open market). The body is optional: `{"occurred_at": ...}`."""

        async def apply(conn: Conn, now: datetime) -> Reply:
            return Reply(200, _json(MarketOut, await ingest.close_market(conn, market_id, body or CloseIn(), now)))

        return await run(request, key, body, apply)

    @api.post("/markets/{market_id}/resolve", response_model=MarketOut, responses=WRITE_ERRORS)
    async def resolve_market(
        market_id: str, body: ResolveIn, request: Request, key: IdempotencyKeyHeader = None
    ) -> JSONResponse:
        """Settle a market that is not yet resolved or cancelled."""

        async def apply(conn: Conn, now: datetime) -> Reply:
            return Reply(200, _json(MarketOut, await ingest.resolve_market(conn, market_id, body, now)))

        return await run(request, key, body, apply)

    @api.post("/markets/{market_id}/cancel", response_model=MarketOut, responses=WRITE_ERRORS)
    async def cancel_market(
        market_id: str, request: Request, body: CancelIn | None = None, key: IdempotencyKeyHeader = None
    ) -> JSONResponse:
        """Void a market that is not yet resolved or cancelled. The body is optional."""

        async def apply(conn: Conn, now: datetime) -> Reply:
            return Reply(200, _json(MarketOut, await ingest.cancel_market(conn, market_id, body or CancelIn(), now)))

        return await run(request, key, body, apply)

    @api.post(
        "/trades",
        status_code=status.HTTP_201_CREATED,
        response_model=TradeOut,
        responses={200: {"description": "Replay of a trade_id already recorded; nothing changed"}, **WRITE_ERRORS},
    )
    async def record_trade(body: TradeIn, request: Request, key: IdempotencyKeyHeader = None) -> JSONResponse:
        """Record one trade; a known `trade_id` with the same fields is a replay (200)."""

        async def apply(conn: Conn, now: datetime) -> Reply:
            result = await ingest.record_trades(conn, [body], now)
            return Reply(201 if result.recorded else 200, _json(TradeOut, result.trades[0]))

        return await run(request, key, body, apply)

    @api.post(
        "/trades/batch", status_code=status.HTTP_201_CREATED, response_model=TradeBatchOut, responses=WRITE_ERRORS
    )
    async def record_trades(body: TradeBatchIn, request: Request, key: IdempotencyKeyHeader = None) -> JSONResponse:
        """Record up to 1,000 trades atomically (all or none); `loc` of an error points at `trades.<index>`."""

        async def apply(conn: Conn, now: datetime) -> Reply:
            result = await ingest.record_trades(conn, body.trades, now, default_time=body.occurred_at)
            return Reply(201, _json(TradeBatchOut, {"recorded": result.recorded, "trades": result.trades}))

        return await run(request, key, body, apply)

    @api.post(
        "/signals",
        status_code=status.HTTP_201_CREATED,
        response_model=SignalOut,
        responses={200: {"description": "Replay of a signal_id already recorded; nothing changed"}, **WRITE_ERRORS},
    )
    async def record_signal(body: SignalIn, request: Request, key: IdempotencyKeyHeader = None) -> JSONResponse:
        """Record a social post or news item; a known `signal_id` with the same fields is a replay (200)."""

        async def apply(conn: Conn, now: datetime) -> Reply:
            signal, new = await ingest.record_signal(conn, body, now)
            return Reply(201 if new else 200, _json(SignalOut, signal))

        return await run(request, key, body, apply)

    @api.post(
        "/signals/batch", status_code=status.HTTP_201_CREATED, response_model=SignalBatchOut, responses=WRITE_ERRORS
    )
    async def record_signals(body: SignalBatchIn, request: Request, key: IdempotencyKeyHeader = None) -> JSONResponse:
        """Record up to 1,000 signals atomically (all or none); `loc` of an error points at `signals.<index>`."""

        async def apply(conn: Conn, now: datetime) -> Reply:
            result = await ingest.record_signals(conn, body.signals, now, default_time=body.occurred_at)
            return Reply(201, _json(SignalBatchOut, {"recorded": result.recorded, "signals": result.signals}))

        return await run(request, key, body, apply)

    return api
