"""analytics' internal API (the gateway serves it publicly): markets, users, system, trends, calibration and
insights. Reads come from the hot read models (Redis) or indexed rows and buckets — never from trades."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from pydantic import AwareDatetime

from om_analytics import calibration, insights, metrics, store
from om_analytics.handlers import AnalyticsHandlers
from om_analytics.health import UNMEASURED
from om_analytics.portfolio import Position, payoff
from om_contracts import PlatformHealthUpdated, SystemMetricsUpdated

TIMEFRAMES = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
DEFAULT_RESOLUTION = {"1h": "1m", "24h": "1h", "7d": "1h", "30d": "1d"}
MAX_POINTS = 10_000
CALIBRATION_TTL_S = 10.0


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode()


def _offset(cursor: str | None) -> int:
    if cursor is None:
        return 0
    try:
        kind, value = base64.urlsafe_b64decode(cursor.encode()).decode().split(":", 1)
        offset = int(value)
        if kind != "o" or offset < 0:
            raise ValueError(cursor)
        return offset
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise HTTPException(422, [{"loc": ["query", "cursor"], "msg": "not a cursor this API returned",
                                   "type": "value_error"}]) from None  # fmt: skip


def _range_error(field: str, msg: str) -> HTTPException:
    return HTTPException(422, [{"loc": ["query", field], "msg": msg, "type": "value_error"}])


def router(handlers: AnalyticsHandlers) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["analytics"])
    hot, db = handlers.hot, handlers.db

    async def market_or_404(market_id: str) -> dict[str, Any]:
        snapshot = await hot.market(market_id)
        if snapshot is None:
            async with db.transaction() as conn:
                snapshot = await store.market_snapshot(conn, market_id)
        if snapshot is None:
            raise HTTPException(404, f"no analytics for market {market_id!r} yet")
        return snapshot

    async def user_or_404(user_id: str) -> dict[str, Any]:
        # Computed on request from the user's totals and open positions (no trades read): marking to market
        # needs the current prices, which move after the user's last published snapshot.
        snapshot = await handlers.user_now(user_id)
        if snapshot is None:
            raise HTTPException(404, f"no analytics for user {user_id!r}: no trade of theirs seen")
        return snapshot

    async def platform_calibration() -> dict[str, Any]:
        """Calibration and per-model accuracy over resolved markets, cached briefly (it reads every resolved
        market's row, not trades)."""
        # Versioned: each commit that changes calibration bumps its generation, so a copy computed from rows read
        # before that commit is not served even if it was stored after.
        generation, cached = await hot.get_current("calibration")
        if cached is None:
            async with db.transaction() as conn:
                rows = await store.resolved_markets(conn)
            cached = {
                "overall": calibration.calibration(rows),
                "models": calibration.accuracy_by_model(rows),
                "rows": [[r.category, r.price, r.predicted, r.model_version, r.outcome, r.market_id] for r in rows],
            }
            await hot.put_current("calibration", generation, cached, ttl_s=CALIBRATION_TTL_S)
        result: dict[str, Any] = cached
        return result

    @api.get("/markets/{market_id}/metrics", summary="A market's current metrics")
    async def market_metrics(market_id: str) -> dict[str, Any]:
        snapshot = await market_or_404(market_id)
        models = (await platform_calibration())["models"]
        return {**snapshot, "prediction_accuracy": models.get(snapshot.get("model_version") or "")}

    @api.get("/markets", summary="Markets with their metrics, filtered and sorted")
    async def list_markets(
        status: Literal["open", "closed", "resolved", "cancelled"] | None = None,
        category: Annotated[str | None, Query(max_length=64)] = None,
        sort: Literal["volume_24h", "liquidity", "close_at"] = "volume_24h",
        order: Literal["asc", "desc"] = "desc",
        cursor: Annotated[str | None, Query(max_length=100)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> dict[str, Any]:
        offset = _offset(cursor)
        async with db.transaction() as conn:
            items = await store.list_markets(
                conn, status=status, category=category, sort=sort, descending=order == "desc", offset=offset,
                limit=limit + 1,
            )  # fmt: skip
        return {"items": items[:limit], "next_cursor": _cursor(offset + limit) if len(items) > limit else None}

    @api.get("/markets/{market_id}/candles", summary="OHLCV candles of a market")
    async def candles(
        market_id: str,
        timeframe: Literal["1h", "24h", "7d", "30d"] = "24h",
        resolution: Literal["1m", "1h", "1d"] | None = None,
        from_: Annotated[AwareDatetime | None, Query(alias="from")] = None,
        to: AwareDatetime | None = None,
    ) -> dict[str, Any]:
        snapshot = await market_or_404(market_id)
        end = to or datetime.fromisoformat(snapshot["as_of"])
        start = from_ or end - TIMEFRAMES[timeframe]
        step: str = resolution or DEFAULT_RESOLUTION[timeframe]
        if start > end:
            raise _range_error("from", "must not be after `to`")
        if (end - start) / metrics.RESOLUTIONS[step] > MAX_POINTS:
            raise _range_error("resolution", f"more than {MAX_POINTS} candles; choose a coarser resolution")
        async with db.transaction() as conn:
            buckets = await store.market_buckets(conn, market_id, step, start, end)
        return {
            "market_id": market_id,
            "resolution": step,
            "from": start,
            "to": end,
            "candles": metrics.candles(buckets, step),
        }

    @api.get("/markets/{market_id}/price-history", summary="A market's price over time (closes per period)")
    async def price_history(
        market_id: str,
        from_: Annotated[AwareDatetime | None, Query(alias="from")] = None,
        to: AwareDatetime | None = None,
    ) -> dict[str, Any]:
        snapshot = await market_or_404(market_id)
        end = to or datetime.fromisoformat(snapshot["as_of"])
        start = from_ or end - timedelta(hours=24)
        if start > end:
            raise _range_error("from", "must not be after `to`")
        span = end - start
        resolution = "1m" if span <= timedelta(days=2) else "1h" if span <= timedelta(days=90) else "1d"
        async with db.transaction() as conn:
            buckets = await store.market_buckets(conn, market_id, resolution, start, end)
        points = [{"at": b.close_key[0], "price": b.close} for _, b in sorted(buckets.items()) if b.close_key]
        return {"market_id": market_id, "resolution": resolution, "from": start, "to": end, "points": points}

    @api.get("/users/{user_id}/metrics", summary="A user's trading metrics")
    async def user_metrics(user_id: str) -> dict[str, Any]:
        return await user_or_404(user_id)

    @api.get("/users/{user_id}/portfolio", summary="A user's open positions, marked to market")
    async def portfolio(user_id: str) -> dict[str, Any]:
        snapshot = await user_or_404(user_id)
        async with db.transaction() as conn:
            rows = await store.open_positions(conn, user_id)
        return {"user_id": user_id, "as_of": snapshot["as_of"], "positions": [_position_view(r) for r in rows]}

    @api.get("/system/metrics", response_model=SystemMetricsUpdated, summary="Platform metrics and top markets")
    async def system_metrics() -> SystemMetricsUpdated:
        return await handlers.system_snapshot()

    @api.get(
        "/system/health",
        response_model=PlatformHealthUpdated,
        response_model_exclude={"services": {"__all__": set(UNMEASURED)}},
        summary="Per-service platform health",
    )
    async def system_health() -> PlatformHealthUpdated:
        cached = await hot.get("health")
        return PlatformHealthUpdated.model_validate(cached) if cached else await handlers.health_snapshot()

    @api.get("/leaderboard", summary="Users ranked by P&L, volume or success rate")
    async def leaderboard(
        by: Literal["pnl", "volume", "success_rate"] = "pnl", limit: Annotated[int, Query(ge=1, le=100)] = 10
    ) -> dict[str, Any]:
        ranked = await hot.leaderboard(by, limit)
        return {"by": by, "items": [{"rank": i + 1, "user_id": u, "value": v} for i, (u, v) in enumerate(ranked)]}

    @api.get("/calibration", summary="Brier score and reliability of prices and predictions, per category")
    async def platform_calibration_view(category: Annotated[str | None, Query(max_length=64)] = None) -> dict[str, Any]:
        cached = await platform_calibration()
        rows = [
            calibration.Resolved(category=c, price=p, predicted=f, model_version=v, outcome=o, market_id=m)
            for c, p, f, v, o, m in cached["rows"]
        ]
        return {**calibration.calibration(rows, category), "models": cached["models"]}

    @api.get("/insights/market/{market_id}", summary="A market's metrics, prediction, trend and comparables")
    async def market_insights(market_id: str) -> dict[str, Any]:
        snapshot = await market_or_404(market_id)
        as_of = datetime.fromisoformat(snapshot["as_of"])
        async with db.transaction() as conn:
            row = (await store.market_rows(conn, [market_id]))[market_id]
            buckets = await store.market_buckets(conn, market_id, "1h", as_of - timedelta(hours=24), as_of)
            candidates = (
                await store.comparable_candidates(conn, row["category"], row["close_at"]) if row["category"] else []
            )
        target = insights.MarketPoint(market_id, row["close_at"], row["liquidity"])
        nearest = insights.comparable(
            target, [insights.MarketPoint(c["market_id"], c["close_at"], c["liquidity"]) for c in candidates]
        )
        prediction = row["prediction"]
        return {
            "market_id": market_id,
            "metrics": snapshot,
            "prediction": prediction,
            "explanation": (prediction or {}).get("contributions", []),
            "trend": {"resolution": "1h", "candles": metrics.candles(buckets, "1h")},
            "comparable_markets": [{"market_id": m, "distance": d} for m, d in nearest],
        }

    @api.get("/insights/portfolio/{user_id}", summary="A user's positions, exposure, P&L, risk and the model's view")
    async def portfolio_insights(user_id: str) -> dict[str, Any]:
        snapshot = await user_or_404(user_id)
        async with db.transaction() as conn:
            rows = await store.open_positions(conn, user_id)
        positions = [_position_view(r) for r in rows]
        return {
            "user_id": user_id,
            "metrics": snapshot,
            "positions": positions,
            "disagreements": [p for p in positions if p["model_disagrees"]],
        }

    return api


def _position_view(row: dict[str, Any]) -> dict[str, Any]:
    position = Position(
        market_id=row["market_id"], outcome=row["outcome"], buy_shares=row["buy_shares"], buy_cost=row["buy_cost"],
        sell_shares=row["sell_shares"], sell_proceeds=row["sell_proceeds"], trades=row["trades"],
    )  # fmt: skip
    price = row["current_price"] if row["current_price"] is not None else 0.5
    return {
        "market_id": row["market_id"],
        "outcome": row["outcome"],
        "category": row["category"],
        "status": row["status"],
        "shares": round(position.net_shares, 6),
        "average_price": round(position.average_price, 6),
        "current_price": price,
        "value": round(position.net_shares * payoff(row["outcome"], price), 6),
        "exposure": round(position.exposure, 6),
        "realized_pnl": round(position.realized(), 6),
        "unrealized_pnl": round(position.unrealized(price), 6),
        "predicted_probability": row["predicted_probability"],
        "model_version": row["model_version"],
        "model_disagrees": insights.disagreement(row["outcome"], position.net_shares, row["predicted_probability"]),
    }
