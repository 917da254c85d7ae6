"""feature's internal API: the latest online feature vector of a market."""

from fastapi import APIRouter, HTTPException
from redis.asyncio import Redis

from om_feature import store


def router(redis: Redis) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["features"])

    @api.get("/markets/{market_id}/features", summary="The market's latest feature vector")
    async def market_features(market_id: str) -> dict:
        vector = await store.read_online(redis, market_id)
        if vector is None:
            raise HTTPException(404, f"no features for market {market_id!r} yet")
        return vector

    return api
