"""analytics' internal API: one market's metrics, and the platform's."""

from fastapi import APIRouter, HTTPException

from om_analytics import store
from om_analytics.handlers import AnalyticsHandlers
from om_contracts import SystemMetricsUpdated, utcnow


def router(handlers: AnalyticsHandlers) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["analytics"])

    @api.get("/markets/{market_id}/metrics", summary="A market's current metrics")
    async def market_metrics(market_id: str) -> dict:
        async with handlers.db.transaction() as conn:
            metrics = await store.market_metrics(conn, market_id, utcnow())
        if metrics is None:
            raise HTTPException(404, f"no analytics for market {market_id!r} yet")
        return metrics

    @api.get("/system/metrics", response_model=SystemMetricsUpdated, summary="Platform metrics and top markets")
    async def system_metrics() -> SystemMetricsUpdated:
        return await handlers.system_snapshot()

    return api
