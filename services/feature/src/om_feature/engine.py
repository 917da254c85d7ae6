"""The feature engine: folds decoded events into per-market state and decides what to publish. Pure (no I/O).

It holds the state of the markets of the partitions this process owns, the category histories, and what changed
since the last checkpoint. Outputs are plain data the edges turn into Kafka messages, Redis writes and rows.
Coalescing: at most one vector per market per `coalesce_ms` bucket of event time, whatever the batching. A market's
unpublished state goes out once its bucket is closed by event time — by a later event of the market, or by the
partition's newest event time passing the bucket's end (checked at the end of each batch) — or when the stream goes
idle (`flush`), so the last vector of a burst is always published. A bucket is published once: an event arriving
after its bucket went out at an idle flush is included in the market's next vector.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from om_contracts import MarketCancelled, MarketClosed, MarketCreated, MarketResolved, SignalObserved, TradeExecuted
from om_feature import sentiment
from om_feature.features import (
    DEFAULT,
    BadEvent,
    CategoryHistory,
    FeatureConfig,
    MarketState,
    apply_created,
    apply_signal,
    apply_status,
    apply_trade,
    compute,
    id_key,
)

VECTOR_NAMESPACE = uuid.UUID("9a3c1f7e-5b2d-4e8a-b1c4-7d6e2f0a8c35")
_NAMESPACE_BYTES = VECTOR_NAMESPACE.bytes


def vector_id(market_id: str, last_event_id: str) -> str:
    """A vector's id derives from its market and the last event it includes: a replay republishes the same id.
    Exactly `str(uuid.uuid5(VECTOR_NAMESPACE, f"{market_id}:{last_event_id}"))`, without the UUID objects."""
    digest = hashlib.sha1(_NAMESPACE_BYTES + f"{market_id}:{last_event_id}".encode(), usedforsecurity=False).digest()
    x = "%032x" % (int.from_bytes(digest[:16], "big") & _CLEAR_VERSION_VARIANT | _VERSION_5_VARIANT)
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


_CLEAR_VERSION_VARIANT = ~((0xF000 << 64) | (0xC000 << 48))  # the version nibble and the variant's two bits
_VERSION_5_VARIANT = (0x5000 << 64) | (0x8000 << 48)


@dataclass(frozen=True)
class EngineConfig:
    features: FeatureConfig = DEFAULT
    coalesce_ms: int = 100
    snapshot_every_s: float = 900.0  # a point-in-time snapshot per market per this much event time, and at close
    max_held_per_market: int = 1_000  # events for a market whose creation has not arrived yet
    max_held_total: int = 100_000
    #: how long (wall-clock, from when a checkpoint saved them) a partition remembers the ids of events it applied:
    #: at least ingest's outbox retention (events a broker that lost its log gets again are at most that old)
    dedupe_window_s: float = 600.0


@dataclass(slots=True)  # not frozen: built once per published vector, and frozen __init__ costs
class Vector:
    event_id: str
    market_id: str
    category: str
    as_of: float
    features: dict[str, Any]
    source_event_id: str


@dataclass(frozen=True)
class Outcome:
    market_id: str
    category: str
    created_at: float | None
    close_at: float | None
    closed_at: float | None
    resolved_at: float
    resolution: str
    resolution_price: float
    final_price: float


class AppliedIds:
    """The ids (64-bit keys, `features.id_key`) of the events one partition applied within the dedupe window.

    `fresh` holds those applied since the last checkpoint; a checkpoint saves them and seals them as one chunk
    stamped with its time (`sealed`, oldest first), and chunks older than the window are forgotten. Bounded by the
    window's events, not by the markets' histories; an id is in at most one chunk."""

    __slots__ = ("seen", "fresh", "sealed")

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.fresh: list[int] = []
        self.sealed: deque[tuple[float, list[int]]] = deque()

    def add_sealed(self, saved_at: float, keys: list[int]) -> None:
        self.seen.update(keys)
        self.sealed.append((saved_at, keys))

    def seal(self, now: float, window_s: float) -> None:
        if self.fresh:
            self.sealed.append((now, self.fresh))
            self.fresh = []
        sealed, seen = self.sealed, self.seen
        while sealed and sealed[0][0] < now - window_s:
            seen.difference_update(sealed.popleft()[1])


@dataclass
class Output:
    vectors: list[Vector] = field(default_factory=list)
    snapshots: list[Vector] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    #: (the caller's reference to the input, reason)
    rejected: list[tuple[Any, str]] = field(default_factory=list)
    duplicates: int = 0


class Engine:
    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        self.markets: dict[str, MarketState] = {}
        self.categories: dict[str, CategoryHistory] = {}
        self.dirty: set[str] = set()
        self.held_total = 0
        #: trades and signals that arrived more than the grace period behind their market's newest event (totals
        #: only, no windows or sentiment: docs/features.md), by kind; /metrics shows them as om_feature_late_events
        self.late: dict[str, int] = {"trade": 0, "signal": 0}
        #: markets with changes not yet in a published vector (insertion order: deterministic output order)
        self.unpublished: dict[str, MarketState] = {}
        self.clocks: dict[int, float] = {}  # newest event time seen per partition: closes coalescing buckets
        #: per partition, the ids of the trades and signals it applied within the dedupe window
        self.applied: dict[int, AppliedIds] = {}

    # --- state handover -------------------------------------------------------------------------------

    def adopt(self, states: Iterable[MarketState]) -> None:
        for s in states:
            self.markets[s.market_id] = s
            self.held_total += len(s.held)
            if s.pending:
                self.unpublished[s.market_id] = s

    def drop_partitions(self, partitions: set[int]) -> None:
        for market_id in [m for m, s in self.markets.items() if s.partition in partitions]:
            self.held_total -= len(self.markets.pop(market_id).held)
            self.dirty.discard(market_id)
            self.unpublished.pop(market_id, None)
        for p in partitions:
            self.clocks.pop(p, None)
            self.applied.pop(p, None)

    def adopt_applied(self, partition: int, chunks: Iterable[tuple[float, list[int]]]) -> None:
        """Event ids a checkpoint saved for `partition`: (when saved, keys), oldest first."""
        ids = self._applied(partition)
        for saved_at, keys in chunks:
            ids.add_sealed(saved_at, keys)

    def fresh_applied(self) -> Mapping[int, list[int]]:
        """Per partition, the ids applied since the last `seal_applied` (what a checkpoint saves)."""
        return {p: ids.fresh for p, ids in self.applied.items() if ids.fresh}

    def seal_applied(self, now: float) -> None:
        """The fresh ids were saved at `now`; forget those saved before the dedupe window."""
        for ids in self.applied.values():
            ids.seal(now, self.config.dedupe_window_s)

    def _applied(self, partition: int) -> AppliedIds:
        ids = self.applied.get(partition)
        if ids is None:
            ids = self.applied[partition] = AppliedIds()
        return ids

    def add_resolution(self, outcome: Outcome) -> None:
        """A resolution, from this process or (via the outcomes table) from another one."""
        history = self.categories.get(outcome.category)
        if history is None:
            history = self.categories[outcome.category] = CategoryHistory()
        history.add(outcome.market_id, outcome.resolved_at, outcome.final_price, outcome.resolution_price)

    def take_dirty(self, partitions: set[int] | None = None) -> list[MarketState]:
        """The states changed since the last call (optionally only those of `partitions`), for a checkpoint."""
        chosen = [m for m in self.dirty if partitions is None or self.markets[m].partition in partitions]
        self.dirty.difference_update(chosen)
        return [self.markets[m] for m in chosen]

    # --- processing ------------------------------------------------------------------------------------

    def process(self, items: Iterable[tuple[Any, int, Any]]) -> Output:
        """Apply (event, partition, reference) items in order; return what to publish and store."""
        out = Output()
        touched: dict[str, MarketState] = {}
        for event, partition, ref in items:
            try:
                self._apply(event, partition, ref, out, touched)
            except BadEvent as exc:
                out.rejected.append((ref, f"{type(event).__name__} {event.event_id}: {exc}"))
        clocks, unpublished = self.clocks, self.unpublished
        for s in touched.values():  # a partition's clock: the newest watermark of its markets (finite times only)
            if s.watermark > clocks.get(s.partition, -math.inf) and math.isfinite(s.watermark):
                clocks[s.partition] = s.watermark
            if s.pending:
                unpublished[s.market_id] = s
        ms = self.config.coalesce_ms
        for s in list(unpublished.values()):
            clock = clocks.get(s.partition)
            if clock is not None and round(clock * 1000) // ms != round(s.watermark * 1000) // ms:
                self._emit(s, out)  # the partition's event time has passed the end of the market's bucket
        return out

    def flush(self) -> Output:
        """Publish every market's unpublished state (the stream went idle: no bucket will be closed by events)."""
        out = Output()
        for s in list(self.unpublished.values()):
            self._emit(s, out)
        return out

    def _state(self, market_id: str, partition: int) -> MarketState:
        s = self.markets.get(market_id)
        if s is None:
            s = self.markets[market_id] = MarketState(market_id, partition, self.config.features)
        return s

    def _apply(self, event: Any, partition: int, ref: Any, out: Output, touched: dict[str, MarketState]) -> None:
        s = self._state(event.market_id, partition)
        if not s.created and not isinstance(event, MarketCreated):
            if len(s.held) >= self.config.max_held_per_market or self.held_total >= self.config.max_held_total:
                raise BadEvent(f"market {event.market_id!r} is unknown (no market.created) and the hold is full")
            s.held.append((event, ref))
            self.held_total += 1
            self.dirty.add(s.market_id)
            return
        self.dirty.add(s.market_id)
        touched[s.market_id] = s
        if isinstance(event, MarketCreated):
            self._coalesce(s, event.occurred_at.timestamp(), out)
            apply_created(
                s,
                event_id=str(event.event_id),
                at=event.occurred_at.timestamp(),
                category=event.category,
                close_at=event.close_at.timestamp(),
                initial_price=event.initial_price,
            )
            s.pending = s.status == "open"
            held, s.held = s.held, []
            self.held_total -= len(held)
            for held_event, held_ref in held:
                try:
                    self._apply(held_event, partition, held_ref, out, touched)
                except BadEvent as exc:
                    out.rejected.append((held_ref, f"{type(held_event).__name__} {held_event.event_id}: {exc}"))
            return
        if isinstance(event, TradeExecuted | SignalObserved):
            # Dedupe by event id only, however old the event: one applied before (a redelivery, or a replay after
            # the broker lost its log) changes nothing; one never applied is applied, late or not.
            event_id = event.event_id
            key = event_id.int >> 64 if isinstance(event_id, uuid.UUID) else id_key(str(event_id))
            # The ids live with the partition the market's state lives in (where it was first seen), so whichever
            # process owns the state owns them; a topic re-created with other partitions (a broker that lost it
            # too) does not split them.
            ids = self.applied.get(s.partition) or self._applied(s.partition)
            if key in ids.seen:
                out.duplicates += 1
                return
            at = event.occurred_at.timestamp()
            if at < s.watermark - self.config.features.grace_s:
                self.late["trade" if isinstance(event, TradeExecuted) else "signal"] += 1
            self._coalesce(s, at, out)
            if isinstance(event, TradeExecuted):
                apply_trade(
                    s,
                    self.config.features,
                    event_id=str(event_id),
                    at=at,
                    user_id=event.user_id,
                    amount=event.amount,
                    price_before=event.price_before,
                    price_after=event.price_after,
                )
            else:
                score = event.sentiment if event.sentiment is not None else sentiment.score(event.text)
                apply_signal(s, self.config.features, event_id=str(event_id), at=at, kind=event.kind, sentiment=score)
            ids.seen.add(key)
            ids.fresh.append(key)
            if s.status == "open":
                s.pending = True
            return
        # closed / resolved / cancelled: publish and snapshot the last open state first
        at = event.occurred_at.timestamp()
        if s.status == "open":
            if s.pending:
                self._emit(s, out)
            if s.watermark < at and s.last_event_id is not None:
                out.snapshots.append(self._vector(s))
        if isinstance(event, MarketResolved):
            final_price = s.price
            apply_status(
                s,
                event_id=str(event.event_id),
                at=at,
                status="resolved",
                resolution=event.resolution,
                price=event.resolution_price,
            )
            outcome = Outcome(
                market_id=s.market_id,
                category=s.category,
                created_at=s.created_at,
                close_at=s.close_at,
                closed_at=s.closed_at,
                resolved_at=at,
                resolution=event.resolution,
                resolution_price=event.resolution_price,
                final_price=final_price,
            )
            self.add_resolution(outcome)
            out.outcomes.append(outcome)
        else:
            if not isinstance(event, MarketClosed | MarketCancelled):
                raise BadEvent(f"{event.event_type} is not an event feature applies")
            status = "closed" if isinstance(event, MarketClosed) else "cancelled"
            apply_status(s, event_id=str(event.event_id), at=at, status=status)
        s.pending = False

    def _coalesce(self, s: MarketState, at: float, out: Output) -> None:
        """Publish the pending state if this event starts a later event-time bucket than the pending one's."""
        if s.pending and at > s.watermark:
            ms = self.config.coalesce_ms  # integer milliseconds: float division of epoch times is not exact
            if round(at * 1000) // ms != round(s.watermark * 1000) // ms:
                self._emit(s, out)

    def _vector(self, s: MarketState) -> Vector:
        as_of = s.watermark
        return Vector(
            event_id=vector_id(s.market_id, s.last_event_id or ""),
            market_id=s.market_id,
            category=s.category,
            as_of=as_of,
            features=compute(s, self.config.features, self.categories.get(s.category), as_of),
            source_event_id=s.last_event_id or "",
        )

    def _emit(self, s: MarketState, out: Output) -> None:
        s.pending = False
        self.unpublished.pop(s.market_id, None)
        if s.status != "open" or not s.created or not math.isfinite(s.watermark):
            return
        bucket = round(s.watermark * 1000) // self.config.coalesce_ms
        if bucket == s.published_bucket:
            return  # this bucket went out already (at an idle flush): the change rides with the next vector
        s.published_bucket = bucket
        vector = self._vector(s)
        out.vectors.append(vector)
        every = self.config.snapshot_every_s
        if vector.as_of // every != s.snapshot_at // every if math.isfinite(s.snapshot_at) else True:
            s.snapshot_at = vector.as_of
            out.snapshots.append(vector)
