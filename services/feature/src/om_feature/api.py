"""feature's internal API: a market's latest online vector, and the training export of point-in-time snapshots
of resolved markets (the prediction service trains on it; it never reads feature's tables)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from redis.asyncio import Redis

from om_feature import store
from om_runtime.db import Database

MAX_PAGE = 5_000


def router(redis: Redis, db: Database) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["features"])

    @api.get("/markets/{market_id}/features", summary="The market's latest feature vector")
    async def market_features(market_id: str) -> dict[str, Any]:
        vector = await store.read_online(redis, market_id)
        if vector is None:
            raise HTTPException(404, f"no features for market {market_id!r} yet")
        return vector

    @api.get(
        "/training/snapshots",
        summary="Point-in-time feature snapshots of resolved markets, for training",
        description="Each item is a snapshot taken strictly before its market closed and resolved, with the "
        "market's outcome. Ordered by (resolved_at, market_id, as_of); pass `next_cursor` back to page on. "
        "Cancelled markets are not included.",
    )
    async def training_snapshots(
        resolved_after: Annotated[datetime | None, Query(description="inclusive, ISO 8601 with zone")] = None,
        resolved_before: Annotated[datetime | None, Query(description="exclusive, ISO 8601 with zone")] = None,
        cursor: Annotated[str | None, Query(max_length=1000)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1_000,
    ) -> dict[str, Any]:
        for name, value in (("resolved_after", resolved_after), ("resolved_before", resolved_before)):
            if value is not None and value.tzinfo is None:
                raise HTTPException(
                    422, [{"loc": ["query", name], "msg": "a time zone is required", "type": "value_error"}]
                )
        try:
            async with db.transaction() as conn:
                return await store.training_snapshots(
                    conn,
                    resolved_after=resolved_after,
                    resolved_before=resolved_before,
                    cursor=cursor,
                    limit=limit,
                )
        except store.BadCursor as exc:
            raise HTTPException(422, [{"loc": ["query", "cursor"], "msg": str(exc), "type": "value_error"}]) from exc

    return api
