"""ingest's write use cases. Each is one transaction: lock, check the rules, record the change, enqueue its event."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime
from typing import Any

from om_contracts import (
    MarketCancelled,
    MarketClosed,
    MarketCreated,
    MarketResolved,
    SignalObserved,
    TradeExecuted,
    utcnow,
)
from om_contracts.api import CancelIn, MarketIn, ResolveIn, SignalIn, TradeIn
from om_contracts.topics import MARKET_LIFECYCLE, MARKET_SIGNALS, MARKET_TRADES
from om_ingest import domain, store
from om_ingest.domain import Conflict, Market
from om_runtime.db import Database

PRODUCER = "ingest"


def _new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


class Ingest:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create_market(self, body: MarketIn) -> dict[str, Any]:
        created_at = body.created_at or utcnow()
        domain.check_new_market(created_at, body.close_at)
        market = {
            **body.model_dump(),
            "market_id": body.market_id or _new_id("mkt"),
            "created_at": created_at,
        }
        async with self.db.transaction() as conn:
            if not await store.insert_market(conn, market):
                raise Conflict(f"market {market['market_id']!r} already exists", field="market_id")
            event = MarketCreated(
                occurred_at=created_at,
                producer=PRODUCER,
                market_id=market["market_id"],
                question=body.question,
                category=body.category,
                close_at=body.close_at,
                initial_price=body.initial_price,
            )
            await store.enqueue(conn, MARKET_LIFECYCLE, event)
            return await store.market_row(conn, market["market_id"])

    async def record_trades(self, trades: list[TradeIn]) -> tuple[int, list[dict[str, Any]]]:
        """Record trades atomically: all of them, or none if any breaks a rule.

        A `trade_id` seen before is an idempotent replay: the stored trade is returned and nothing is counted
        again. The batch costs a fixed number of statements, however many trades it holds.
        """
        now = utcnow()
        async with self.db.transaction() as conn:
            known = await store.trades_by_id(conn, [t.trade_id for t in trades if t.trade_id])
            markets = await store.lock_markets(conn, sorted({t.market_id for t in trades}))
            new: list[dict[str, Any]] = []
            out: list[dict[str, Any]] = []
            for index, t in enumerate(trades):
                try:
                    if t.trade_id in known:
                        out.append(_same_trade(known[t.trade_id], t))
                        continue
                    trade = _execute(t, markets, now)
                except domain.DomainError as exc:
                    if len(trades) > 1:
                        exc.field = f"trades.{index}.{exc.field or 'market_id'}"
                    raise
                known[trade["trade_id"]] = trade  # the same id again in this batch is a replay too
                new.append(trade)
                out.append(trade)
            if new:
                await store.ensure_users(conn, _first_seen(new))
                await store.insert_trades(conn, new)
                await store.set_prices(conn, [markets[m] for m in {t["market_id"] for t in new}])
                await store.enqueue(conn, MARKET_TRADES, *map(_trade_event, new))
        return len(new), out

    async def record_signal(self, s: SignalIn) -> tuple[dict[str, Any], bool]:
        """Record a signal; a `signal_id` seen before is a replay (returned, not recorded again)."""
        observed_at = s.observed_at or utcnow()
        signal = {**s.model_dump(), "signal_id": s.signal_id or _new_id("sig"), "observed_at": observed_at}
        async with self.db.transaction() as conn:
            if s.signal_id and (existing := await store.signal_row(conn, s.signal_id)):
                return _same(
                    existing, signal, what="signal", skip={"observed_at"} if s.observed_at is None else set()
                ), False
            domain.require(await store.lock_market(conn, s.market_id), s.market_id)
            await store.insert_signal(conn, signal)
            event_fields = {k: v for k, v in signal.items() if k != "observed_at"}
            event = SignalObserved(occurred_at=observed_at, producer=PRODUCER, **event_fields)
            await store.enqueue(conn, MARKET_SIGNALS, event)
        return signal, True

    async def close_market(self, market_id: str, at: datetime | None = None) -> dict[str, Any]:
        async with self.db.transaction() as conn:
            market = domain.require(await store.lock_market(conn, market_id), market_id, location="path")
            domain.check_close(market)
            await store.set_status(conn, market_id, "closed")
            event = MarketClosed(occurred_at=at or utcnow(), producer=PRODUCER, market_id=market_id)
            await store.enqueue(conn, MARKET_LIFECYCLE, event)
            return await store.market_row(conn, market_id)

    async def resolve_market(self, market_id: str, body: ResolveIn) -> dict[str, Any]:
        async with self.db.transaction() as conn:
            market = domain.require(await store.lock_market(conn, market_id), market_id, location="path")
            price = domain.resolution_price(market, body.resolution, body.resolution_price)
            await store.set_status(conn, market_id, "resolved", resolution=body.resolution, resolution_price=price)
            event = MarketResolved(
                occurred_at=utcnow(),
                producer=PRODUCER,
                market_id=market_id,
                resolution=body.resolution,
                resolution_price=price,
            )
            await store.enqueue(conn, MARKET_LIFECYCLE, event)
            return await store.market_row(conn, market_id)

    async def cancel_market(self, market_id: str, body: CancelIn) -> dict[str, Any]:
        async with self.db.transaction() as conn:
            market = domain.require(await store.lock_market(conn, market_id), market_id, location="path")
            domain.check_cancel(market)
            await store.set_status(conn, market_id, "cancelled")
            event = MarketCancelled(occurred_at=utcnow(), producer=PRODUCER, market_id=market_id, reason=body.reason)
            await store.enqueue(conn, MARKET_LIFECYCLE, event)
            return await store.market_row(conn, market_id)


def _execute(t: TradeIn, markets: dict[str, Market], now: datetime) -> dict[str, Any]:
    """Check a new trade against its market and move the market's price (in `markets`, not yet stored)."""
    executed_at = t.executed_at or now
    market = domain.require(markets.get(t.market_id), t.market_id)
    domain.check_trade(market, executed_at)
    price, last_trade_at = domain.price_after(market, t.price, executed_at)
    markets[t.market_id] = replace(market, current_price=price, last_trade_at=last_trade_at)
    return {
        **t.model_dump(exclude={"price", "executed_at"}),
        "trade_id": t.trade_id or _new_id("trd"),
        "price_before": market.current_price,
        "price_after": t.price,
        "executed_at": executed_at,
    }


def _first_seen(trades: list[dict[str, Any]]) -> dict[str, datetime]:
    first: dict[str, datetime] = {}
    for t in trades:
        first[t["user_id"]] = min(first.get(t["user_id"], t["executed_at"]), t["executed_at"])
    return first


def _trade_event(trade: dict[str, Any]) -> TradeExecuted:
    fields = {k: v for k, v in trade.items() if k != "executed_at"}
    return TradeExecuted(occurred_at=trade["executed_at"], producer=PRODUCER, **fields)


def _same_trade(existing: dict[str, Any], t: TradeIn) -> dict[str, Any]:
    sent = t.model_dump(exclude={"price", "executed_at"}) | {"price_after": t.price, "executed_at": t.executed_at}
    return _same(existing, sent, what="trade", skip={"executed_at"} if t.executed_at is None else set())


def _same(existing: dict[str, Any], sent: dict[str, Any], *, what: str, skip: set[str]) -> dict[str, Any]:
    """A replayed id must describe the same thing; something different under the same id is a conflict.
    Fields the client left to default (such as the time) are not compared."""
    key = f"{what}_id"
    differs = [k for k, v in sent.items() if k not in skip and k != key and existing[k] != v]
    if differs:
        raise Conflict(f"{what} {sent[key]!r} was recorded with different {', '.join(differs)}", field=key)
    return existing
