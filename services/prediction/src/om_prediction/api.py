"""prediction's internal API: the latest prediction of a market, and its history."""

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from redis.asyncio import Redis

from om_contracts import PredictionMade
from om_prediction import store
from om_runtime.db import Database


def router(db: Database, redis: Redis) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["predictions"])

    @api.get("/markets/{market_id}/prediction", response_model=PredictionMade, summary="Latest prediction")
    async def latest(market_id: str) -> PredictionMade | dict:
        if cached := await store.cached_latest(redis, market_id):
            return cached
        async with db.transaction() as conn:
            row = await store.latest(conn, market_id)
        if row is None:
            raise HTTPException(404, f"no prediction for market {market_id!r} yet")
        return _event(row)

    @api.get("/markets/{market_id}/predictions", response_model=list[PredictionMade], summary="History, newest first")
    async def history(market_id: str, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict]:
        async with db.transaction() as conn:
            return [_event(row) for row in await store.history(conn, market_id, limit)]

    return api


def _event(row: dict) -> dict:
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
    }
