"""ingest's write use cases. Each runs in the caller's transaction: lock, check the rules, record the change,
enqueue its event. `Ingest.write` owns the transaction and the `Idempotency-Key` bookkeeping around one use case."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import TypeAdapter
from typing_extensions import TypedDict

from om_contracts import (
    MarketCancelled,
    MarketClosed,
    MarketCreated,
    MarketResolved,
    SignalObserved,
    utcnow,
)
from om_contracts.api import DEFAULT_MAX_FUTURE_SKEW_S, CancelIn, CloseIn, MarketIn, ResolveIn, SignalIn, TradeIn
from om_contracts.topics import MARKET_LIFECYCLE, MARKET_SIGNALS, MARKET_TRADES
from om_ingest import domain, store
from om_ingest.domain import Conflict, Market
from om_ingest.store import Conn
from om_runtime.db import Database

PRODUCER = "ingest"


def _new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


@dataclass(frozen=True)
class Reply:
    """What a write answers: the HTTP status and the JSON body (already shaped by its response model)."""

    status: int
    body: Any


@dataclass(frozen=True)
class IdempotencyKey:
    """A client's `Idempotency-Key` and a fingerprint of the request it came with (method, path, parsed body)."""

    key: str
    fingerprint: str

    @classmethod
    def of(cls, key: str, method: str, path: str, canonical_body: str) -> IdempotencyKey:
        digest = hashlib.sha256(f"{method} {path}\n{canonical_body}".encode()).hexdigest()
        return cls(key, digest)


@dataclass
class TradeResults:
    """The outcome of recording trades: `trades[i]` answers input `i` (None if it was rejected)."""

    recorded: int = 0
    trades: list[dict[str, Any] | None] = field(default_factory=list)
    rejected: list[tuple[int, domain.DomainError]] = field(default_factory=list)


@dataclass
class SignalResults:
    """The outcome of recording signals: `signals[i]` answers input `i`."""

    recorded: int = 0
    signals: list[dict[str, Any]] = field(default_factory=list)


class Ingest:
    def __init__(
        self,
        db: Database,
        *,
        max_future_skew: timedelta = timedelta(seconds=DEFAULT_MAX_FUTURE_SKEW_S),
        idempotency_ttl: timedelta = timedelta(hours=24),
    ) -> None:
        self.db = db
        self.max_future_skew = max_future_skew
        self.idempotency_ttl = idempotency_ttl

    async def write(
        self, key: IdempotencyKey | None, apply: Callable[[Conn, datetime], Awaitable[Reply]]
    ) -> tuple[Reply, bool]:
        """Run one write in one transaction; return its reply and whether it is a replay of an earlier one.

        With an idempotency key, the key is claimed first in the same transaction: a concurrent request with the
        same key waits on the claim, then replays the committed reply (or, if the first rolled back, runs itself).
        The reply is stored with the key, so both commit together or not at all; a refused write (4xx) stores
        nothing, and a retry runs again.
        """
        now = utcnow()
        async with self.db.transaction() as conn:
            if key is not None:
                stored = await store.claim_idempotency_key(conn, key.key, key.fingerprint, now, self.idempotency_ttl)
                if stored is not None:
                    if stored["fingerprint"] != key.fingerprint:
                        raise Conflict(
                            f"Idempotency-Key {key.key!r} was already used with a different request "
                            "(method, path or body); use a new key for a new request",
                            field="Idempotency-Key",
                            location="header",
                        )
                    return Reply(stored["status"], stored["body"]), True
            reply = await apply(conn, now)
            if key is not None:
                await store.save_idempotent_reply(conn, key.key, reply.status, reply.body)
        return reply, False

    def _check_time(self, at: datetime | None, now: datetime, field: str) -> datetime:
        if at is None:
            return now
        domain.check_event_time(at, now, self.max_future_skew, field=field)
        return at

    async def create_market(
        self, conn: Conn, body: MarketIn, now: datetime, *, replay_same: bool = False
    ) -> tuple[dict[str, Any], bool]:
        """Open a market; return its row and whether it is new. An existing id is a conflict, or, with
        `replay_same` (raw intake, where producers redeliver), a replay when it describes the same market."""
        created_at = self._check_time(body.event_time, now, _time_field(body, "created_at"))
        domain.check_new_market(created_at, body.close_at)
        market_id = body.market_id or _new_id("mkt")
        market = {**body.model_dump(exclude={"occurred_at"}), "market_id": market_id, "created_at": created_at}
        if not await store.insert_market(conn, market):
            existing = await store.market_row(conn, market_id)
            if replay_same and existing and _same_market(existing, body):
                return existing, False
            raise Conflict(f"market {market_id!r} already exists", field="market_id")
        event = MarketCreated(
            occurred_at=created_at,
            producer=PRODUCER,
            market_id=market_id,
            question=body.question,
            category=body.category,
            close_at=body.close_at,
            initial_price=body.initial_price,
        )
        await store.enqueue(conn, MARKET_LIFECYCLE, event)
        return await store.written_market(conn, market_id), True

    async def record_trades(
        self,
        conn: Conn,
        trades: list[TradeIn],
        now: datetime,
        *,
        default_time: datetime | None = None,
        partial: bool = False,
    ) -> TradeResults:
        """Record trades: all of them, or none if any breaks a rule (raised); with `partial`, the valid ones,
        and the others are returned as rejected (raw intake, where one bad record must not block the rest).

        The market rows are locked first (in id order), then known ids are looked up, so a concurrent retry of
        the same trade waits for the first and then sees it: a replay (the stored trade, nothing counted again)
        or, with different fields, a conflict. The batch costs a fixed number of statements.
        """
        if default_time is not None:
            default_time = self._check_time(default_time, now, "occurred_at")
        markets = await store.lock_markets(conn, sorted({t.market_id for t in trades}))
        known = await store.trades_by_id(conn, [t.trade_id for t in trades if t.trade_id])
        result = TradeResults()
        new: list[dict[str, Any]] = []
        for index, t in enumerate(trades):
            try:
                sent_time = t.event_time or default_time
                executed_at = self._check_time(sent_time, now, _time_field(t, "executed_at"))
                if t.trade_id in known:
                    result.trades.append(_same_trade(known[t.trade_id], t, sent_time))
                    continue
                trade = _execute(t, markets, executed_at)
            except domain.DomainError as exc:
                if not partial:
                    if len(trades) > 1:
                        exc.field = f"trades.{index}.{exc.field or 'market_id'}"
                    raise
                result.rejected.append((index, exc))
                result.trades.append(None)
                continue
            known[trade["trade_id"]] = trade  # the same id again in this batch is a replay too
            new.append(trade)
            result.trades.append(trade)
        if new:
            await store.ensure_users(conn, _first_seen(new))
            inserted = await store.insert_trades(conn, new)
            if inserted != len(new):
                # Only a concurrent request with the same trade_id on *another* market gets here (one market's
                # writes are serialised by its row lock). The whole write rolls back; a retry sees the stored trade.
                raise Conflict(
                    "a trade_id in this request was recorded concurrently by another request", field="trade_id"
                )
            await store.set_prices(conn, [markets[m] for m in {t["market_id"] for t in new}])
            produced_at = utcnow()
            events = [(t["market_id"], _trade_event_json(t, produced_at)) for t in new]
            await store.enqueue_encoded(conn, MARKET_TRADES, "trade.executed", events)
        result.recorded = len(new)
        return result

    async def record_signal(self, conn: Conn, s: SignalIn, now: datetime) -> tuple[dict[str, Any], bool]:
        """Record a signal; a `signal_id` seen before is a replay (returned, not recorded again).

        The market row is locked before the id is looked up, so a concurrent retry waits and then replays."""
        observed_at = self._check_time(s.event_time, now, _time_field(s, "observed_at"))
        domain.require(await store.lock_market(conn, s.market_id), s.market_id)
        signal = {
            **s.model_dump(exclude={"occurred_at"}),
            "signal_id": s.signal_id or _new_id("sig"),
            "observed_at": observed_at,
        }
        if s.signal_id and (existing := await store.signal_row(conn, s.signal_id)):
            skip = {"observed_at"} if s.event_time is None else set()
            return _same(existing, signal, what="signal", skip=skip), False
        if not await store.insert_signal(conn, signal):
            raise Conflict(
                f"signal {signal['signal_id']!r} was recorded concurrently by another request", field="signal_id"
            )
        event_fields = {k: v for k, v in signal.items() if k != "observed_at"}
        event = SignalObserved(occurred_at=observed_at, producer=PRODUCER, **event_fields)
        await store.enqueue(conn, MARKET_SIGNALS, event)
        return signal, True

    async def record_signals(
        self, conn: Conn, signals: list[SignalIn], now: datetime, *, default_time: datetime | None = None
    ) -> SignalResults:
        """Record signals: all of them, or none if any breaks a rule (raised, its field as `signals.<index>.`).

        As `record_trades`: the markets are locked first (in id order), then known ids are looked up, so a known
        `signal_id` with the same fields is a replay (returned, not recorded or published again) and with
        different fields a conflict. The batch costs a fixed number of statements."""
        if default_time is not None:
            default_time = self._check_time(default_time, now, "occurred_at")
        markets = await store.lock_markets(conn, sorted({s.market_id for s in signals}))
        known = await store.signals_by_id(conn, [s.signal_id for s in signals if s.signal_id])
        result = SignalResults()
        new: list[dict[str, Any]] = []
        for index, s in enumerate(signals):
            try:
                sent_time = s.event_time or default_time
                observed_at = self._check_time(sent_time, now, _time_field(s, "observed_at"))
                domain.require(markets.get(s.market_id), s.market_id)
                signal = {
                    **s.model_dump(exclude={"occurred_at"}),
                    "signal_id": s.signal_id or _new_id("sig"),
                    "observed_at": observed_at,
                }
                if s.signal_id in known:
                    skip = {"observed_at"} if sent_time is None else set()
                    result.signals.append(_same(known[s.signal_id], signal, what="signal", skip=skip))
                    continue
            except domain.DomainError as exc:
                if len(signals) > 1:
                    exc.field = f"signals.{index}.{exc.field or 'market_id'}"
                raise
            known[signal["signal_id"]] = signal  # the same id again in this batch is a replay too
            new.append(signal)
            result.signals.append(signal)
        if new:
            if await store.insert_signals(conn, new) != len(new):
                raise Conflict(
                    "a signal_id in this request was recorded concurrently by another request", field="signal_id"
                )
            events = [
                SignalObserved(
                    occurred_at=s["observed_at"],
                    producer=PRODUCER,
                    **{k: v for k, v in s.items() if k != "observed_at"},
                )
                for s in new
            ]
            await store.enqueue(conn, MARKET_SIGNALS, *events)
        result.recorded = len(new)
        return result

    async def close_market(self, conn: Conn, market_id: str, body: CloseIn, now: datetime) -> dict[str, Any]:
        at = self._check_time(body.event_time, now, "occurred_at")
        market = domain.require(await store.lock_market(conn, market_id), market_id, location="path")
        domain.check_close(market)
        domain.check_not_before_creation(market, at, "closed")
        await store.set_status(conn, market_id, "closed")
        await store.enqueue(
            conn, MARKET_LIFECYCLE, MarketClosed(occurred_at=at, producer=PRODUCER, market_id=market_id)
        )
        return await store.written_market(conn, market_id)

    async def resolve_market(self, conn: Conn, market_id: str, body: ResolveIn, now: datetime) -> dict[str, Any]:
        at = self._check_time(body.event_time, now, "occurred_at")
        market = domain.require(await store.lock_market(conn, market_id), market_id, location="path")
        price = domain.resolution_price(market, body.resolution, body.resolution_price)
        domain.check_not_before_creation(market, at, "resolved")
        await store.set_status(conn, market_id, "resolved", resolution=body.resolution, resolution_price=price)
        event = MarketResolved(
            occurred_at=at,
            producer=PRODUCER,
            market_id=market_id,
            resolution=body.resolution,
            resolution_price=price,
        )
        await store.enqueue(conn, MARKET_LIFECYCLE, event)
        return await store.written_market(conn, market_id)

    async def cancel_market(self, conn: Conn, market_id: str, body: CancelIn, now: datetime) -> dict[str, Any]:
        at = self._check_time(body.event_time, now, "occurred_at")
        market = domain.require(await store.lock_market(conn, market_id), market_id, location="path")
        domain.check_cancel(market)
        domain.check_not_before_creation(market, at, "cancelled")
        await store.set_status(conn, market_id, "cancelled")
        event = MarketCancelled(occurred_at=at, producer=PRODUCER, market_id=market_id, reason=body.reason)
        await store.enqueue(conn, MARKET_LIFECYCLE, event)
        return await store.written_market(conn, market_id)


def _time_field(body: Any, legacy: str) -> str:
    """The name under which the client sent the event time, so an error points at what it wrote."""
    return legacy if getattr(body, legacy, None) is not None else "occurred_at"


def _execute(t: TradeIn, markets: dict[str, Market], executed_at: datetime) -> dict[str, Any]:
    """Check a new trade against its market and move the market's price (in `markets`, not yet stored)."""
    market = domain.require(markets.get(t.market_id), t.market_id)
    domain.check_trade(market, executed_at)
    price, last_trade_at = domain.price_after(market, t.price, executed_at)
    if (price, last_trade_at) != (market.current_price, market.last_trade_at):
        # The constructor, not dataclasses.replace (which inspects the fields on every call: a third of this
        # function's time per trade).
        markets[t.market_id] = Market(
            market_id=market.market_id,
            status=market.status,
            created_at=market.created_at,
            close_at=market.close_at,
            current_price=price,
            last_trade_at=last_trade_at,
        )
    return {
        "trade_id": t.trade_id or _new_id("trd"),
        "market_id": t.market_id,
        "user_id": t.user_id,
        "outcome": t.outcome,
        "side": t.side,
        "amount": t.amount,
        "shares": t.shares,
        "price_before": market.current_price,
        "price_after": t.price,
        "executed_at": executed_at,
        "amount_estimated": t.amount_estimated,
    }


def _first_seen(trades: list[dict[str, Any]]) -> dict[str, datetime]:
    first: dict[str, datetime] = {}
    for t in trades:
        first[t["user_id"]] = min(first.get(t["user_id"], t["executed_at"]), t["executed_at"])
    return first


class _TradeEventJson(TypedDict):
    """`TradeExecuted`'s fields in its order, typed as its JSON wants them: serialized by pydantic-core's own
    serializers for uuids, date-times and floats, so the bytes are exactly `encode(TradeExecuted(...))`'s."""

    event_id: uuid.UUID
    event_type: str
    schema_version: int
    occurred_at: datetime
    produced_at: datetime
    producer: str
    trade_id: str
    market_id: str
    user_id: str
    outcome: str
    side: str
    amount: float
    shares: float
    price_before: float
    price_after: float
    amount_estimated: bool


_TRADE_EVENT_JSON = TypeAdapter(_TradeEventJson).serializer  # pydantic-core's serializer: no wrapper per call


def _trade_event_json(trade: dict[str, Any], produced_at: datetime) -> bytes:
    """The trade's event, encoded, without building the model: every field was validated on the way in (TradeIn,
    the market rules) and this runs once per trade on the hot path. Building a `TradeExecuted` (even with
    `model_construct`) and then serializing it cost about 3x more than serializing these values directly; a test
    checks the bytes equal the contract's own encoding. Times are in UTC, as the contract's validator makes them."""
    return _TRADE_EVENT_JSON.to_json(
        {
            "event_id": uuid.uuid4(),
            "event_type": "trade.executed",
            "schema_version": 1,
            "occurred_at": trade["executed_at"].astimezone(UTC),
            "produced_at": produced_at,
            "producer": PRODUCER,
            "trade_id": trade["trade_id"],
            "market_id": trade["market_id"],
            "user_id": trade["user_id"],
            "outcome": trade["outcome"],
            "side": trade["side"],
            "amount": trade["amount"],
            "shares": trade["shares"],
            "price_before": trade["price_before"],
            "price_after": trade["price_after"],
            "amount_estimated": trade["amount_estimated"],
        }
    )


def _same_market(existing: dict[str, Any], body: MarketIn) -> bool:
    return (existing["question"], existing["category"], existing["close_at"]) == (
        body.question,
        body.category,
        body.close_at,
    )


def _same_trade(existing: dict[str, Any], t: TradeIn, executed_at: datetime | None) -> dict[str, Any]:
    """Compare a replayed trade with the stored one (its time only if the client sent one)."""
    sent = {
        "trade_id": t.trade_id,
        "market_id": t.market_id,
        "user_id": t.user_id,
        "outcome": t.outcome,
        "side": t.side,
        "amount": t.amount,
        "shares": t.shares,
        "price_after": t.price,
        "amount_estimated": t.amount_estimated,
        "executed_at": executed_at,
    }
    return _same(existing, sent, what="trade", skip={"executed_at"} if executed_at is None else set())


def _same(existing: dict[str, Any], sent: dict[str, Any], *, what: str, skip: set[str]) -> dict[str, Any]:
    """A replayed id must describe the same thing; something different under the same id is a conflict.
    Fields the client left to default (such as the time) are not compared."""
    key = f"{what}_id"
    differs = [k for k, v in sent.items() if k not in skip and k != key and existing[k] != v]
    if differs:
        raise Conflict(f"{what} {sent[key]!r} was recorded with different {', '.join(differs)}", field=key)
    return existing
