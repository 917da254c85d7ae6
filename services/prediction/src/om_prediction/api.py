"""prediction's internal API (interfaces item 4): latest prediction, history by time range, a batch of markets,
and the model registry with live accuracy."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field
from redis.asyncio import Redis

from om_contracts import PredictionMade
from om_contracts.events import MarketId
from om_prediction import store
from om_prediction.registry import RegistryError
from om_prediction.serving import ModelHolder
from om_runtime.db import Database


class BatchRequest(BaseModel):
    market_ids: list[MarketId] = Field(min_length=1, max_length=1000)


class BatchError(BaseModel):
    status: int
    detail: str


class BatchResponse(BaseModel):
    predictions: dict[str, PredictionMade]
    errors: dict[str, BatchError]


class PredictionPage(BaseModel):
    items: list[PredictionMade]
    next_cursor: str | None


def _cursor(row: dict[str, Any]) -> str:
    raw = json.dumps([row["features_as_of"].isoformat(), row["event_id"]])
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _parse_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        at, event_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return datetime.fromisoformat(at), str(event_id)
    except (ValueError, TypeError) as exc:
        raise HTTPException(422, [{"loc": ["query", "cursor"], "msg": "not a cursor from this API"}]) from exc


def router(db: Database, redis: Redis, handlers: Any, models: ModelHolder) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["predictions"])

    @api.get("/markets/{market_id}/prediction", response_model=PredictionMade, summary="Latest prediction")
    async def latest(market_id: str) -> PredictionMade | dict[str, Any]:
        if cached := await store.cached_latest(redis, market_id):
            return cached
        async with db.transaction() as conn:
            row = await store.latest(conn, market_id)
        if row is None:
            raise HTTPException(404, f"no prediction for market {market_id!r} yet")
        return _event(row)

    @api.get("/markets/{market_id}/predictions", response_model=PredictionPage, summary="History, newest first")
    async def history(
        market_id: str,
        start: Annotated[datetime | None, Query(alias="from")] = None,
        to: datetime | None = None,
        cursor: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        before = _parse_cursor(cursor) if cursor else None
        async with db.transaction() as conn:
            rows = await store.history(conn, market_id, limit + 1, start=start, end=to, before=before)
        page = rows[:limit]
        return {"items": [_event(r) for r in page], "next_cursor": _cursor(page[-1]) if len(rows) > limit else None}

    @api.post("/predictions/batch", response_model=BatchResponse, summary="Latest predictions of many markets")
    async def batch(body: BatchRequest) -> dict[str, Any]:
        ids = list(dict.fromkeys(body.market_ids))
        found: dict[str, Any] = {}
        for market_id in ids:
            if cached := await store.cached_latest(redis, market_id):
                found[market_id] = cached
        missing = [m for m in ids if m not in found]
        if missing:
            async with db.transaction() as conn:
                for market_id in missing:
                    if row := await store.latest(conn, market_id):
                        found[market_id] = _event(row)
        errors = {m: {"status": 404, "detail": f"no prediction for market {m!r} yet"} for m in ids if m not in found}
        return {"predictions": found, "errors": errors}

    @api.get("/models", summary="Model versions in the registry, with live accuracy")
    async def list_models() -> dict[str, Any]:
        async with db.transaction() as conn:
            live = await store.live_accuracy(conn)
        return {
            "serving": models.version,
            "items": [{**_summary(v), "live": live.get(v["version"])} for v in models.registry.versions()],
            "baseline_live": live.get("baseline-market-price"),
        }

    @api.get("/models/{version}", summary="One model version's manifest")
    async def show_model(version: str) -> dict[str, Any]:
        try:
            entry = models.registry.get(version)
        except RegistryError as exc:
            raise HTTPException(404, str(exc)) from None
        async with db.transaction() as conn:
            live = await store.live_accuracy(conn)
        return {**entry, "live": live.get(version), "serving": models.version == version}

    return api


def _summary(v: dict[str, Any]) -> dict[str, Any]:
    keys = ("version", "state", "created_at", "promoted_at", "checksum", "data")
    return {k: v.get(k) for k in keys} | {"metrics": v.get("metrics")}


def _event(row: dict[str, Any]) -> dict[str, Any]:
    """A stored row in the shape of the PredictionMade event."""
    return {
        "event_id": row["event_id"],
        "event_type": "prediction.made",
        "occurred_at": row["features_as_of"],
        "produced_at": row["made_at"],
        "producer": "prediction",
        **{k: row[k] for k in ("market_id", "probability", "confidence", "risk_level", "model_version")},
        "contributions": row["contributions"],
        "features_as_of": row["features_as_of"],
        "risk_reasons": row.get("risk_reasons") or [],
        "final": row.get("final", False),
        "market_price": row.get("market_price"),
    }
