"""analytics' Kafka handler and its leader loop.

A batch of lifecycle events, trades, signals and predictions is applied in one transaction (through the
runtime's transactional consumer, so each event counts once) with a fixed number of set-based statements. Then
each market and user the batch touched gets a snapshot: written to PostgreSQL and Redis and published once,
under an id derived from its source, so a redelivered batch changes nothing. One replica — the holder of a
PostgreSQL advisory lock — publishes the system and health snapshots, refreshes market windows the clock moved,
and prunes old rows.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import math
import ssl
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
from opentelemetry import trace
from prometheus_client import CollectorRegistry, Histogram

from om_analytics import metrics, store
from om_analytics.health import UNMEASURED, Scrape, service_health
from om_analytics.hot import HotModels, dumps
from om_analytics.leader import Leadership
from om_analytics.portfolio import user_metrics_of
from om_analytics.scrape import consumer_lag, scrape
from om_analytics.settings import AnalyticsSettings
from om_contracts import (
    MarketCancelled,
    MarketClosed,
    MarketCreated,
    MarketMetricsUpdated,
    MarketResolved,
    MarketSummary,
    PlatformHealthUpdated,
    PredictionMade,
    SignalObserved,
    SystemMetrics,
    SystemMetricsUpdated,
    Topic,
    TradeExecuted,
    UserMetricsUpdated,
    utcnow,
)
from om_contracts.topics import ANALYTICS_HEALTH, ANALYTICS_MARKET, ANALYTICS_SYSTEM, ANALYTICS_USER
from om_runtime.db import Database
from om_runtime.kafka import EventPublisher

_tracer = trace.get_tracer(__name__)
log = logging.getLogger(__name__)

PRODUCER = "analytics"


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context for every health scrape: building one loads the CA bundle (~34 ms of CPU, a stall of up to
    0.3 s on a busy machine), which a new client per round did every 15 s."""
    return ssl.create_default_context()


STATUS_AFTER: dict[type, str] = {MarketClosed: "closed", MarketResolved: "resolved", MarketCancelled: "cancelled"}
_REFRESH_IDS = uuid.UUID("3b0f6a52-1d5e-4c1b-8f0e-7d7f6c2f9a41")
MARKET_FIELDS = set(MarketMetricsUpdated.model_fields) - {
    "event_id", "event_type", "schema_version", "occurred_at", "produced_at", "producer",
}  # fmt: skip


def _content_id(kind: str, key: str, text: str) -> uuid.UUID:
    """An update's id from what it says (the snapshot's JSON text, `hot.dumps`): recomputing an unchanged
    snapshot (a redelivery, a restart) publishes the same id, which consumers dedupe."""
    return uuid.uuid5(_REFRESH_IDS, f"{kind}:{key}:{text}")


def event_time(event: Any) -> datetime:
    """When an event happened in the domain; a prediction counts at the time of the features it used."""
    return event.features_as_of if isinstance(event, PredictionMade) else event.occurred_at


class AnalyticsHandlers:
    def __init__(
        self,
        db: Database,
        publisher: EventPublisher,
        hot: HotModels,
        settings: AnalyticsSettings,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.db = db
        self.publisher = publisher
        self.hot = hot
        self.settings = settings
        self.changed = asyncio.Event()  # for the system snapshot
        self.touched = asyncio.Event()  # for the market and user snapshots
        self.last_event_monotonic = time.monotonic()
        self.leadership = Leadership(settings.database_url)
        self._scrapes: dict[str, Scrape] = {}
        self._calibration_changed = False
        self._background: set[asyncio.Task[None]] = set()
        self._market_round = asyncio.Lock()  # market snapshot rounds take turns (see snapshot_markets)
        self._after = {"markets": "", "users": ""}  # where the next round's reading of flagged rows starts
        self._committed_since: float | None = None  # the first batch commit no market round has started after
        # Where a trade's market update waits (the trade -> WebSocket path's analytics hop): a round's length, and
        # from a batch's commit to the end of the first market round that started after it.
        registry = CollectorRegistry() if registry is None else registry  # none given: series of its own
        buckets = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
        self.round_seconds = Histogram(
            "analytics_snapshot_round_seconds", "Snapshot rounds' duration", ["kind"], registry=registry,
            buckets=buckets,
        )  # fmt: skip
        self.commit_to_published = Histogram(
            "analytics_commit_to_market_published_seconds",
            "From a batch's commit to the end of the market round that published its markets (the oldest batch of "
            "each round)",
            registry=registry,
            buckets=buckets,
        )
        # The batch spans whose effects the next snapshot rounds publish: a round's span links to them, so a trace
        # walks from a trade to the market update it caused. A batch may commit while a round is running (its
        # markets then go out in the next round), so each is linked by two rounds. Bounded: a backlog links its
        # latest batches.
        self._batch_spans: collections.deque[tuple[trace.SpanContext, int]] = collections.deque(maxlen=64)

    def after_commit(self) -> None:
        self.last_event_monotonic = time.monotonic()
        if self._committed_since is None:
            self._committed_since = self.last_event_monotonic
        self.changed.set()
        self.touched.set()
        if self._calibration_changed:
            self._calibration_changed = False
            task = asyncio.get_running_loop().create_task(self.hot.bump("calibration"))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    # --- the consumer -------------------------------------------------------------------------------

    async def apply_batch(self, events: list[tuple[Topic, Any]], conn: store.Conn) -> None:
        """Apply a batch of new events in the caller's transaction and flag what it touched; the leader
        recomputes and publishes those snapshots once per tick however many batches touched them, so a
        backlog costs one snapshot per market and user per tick, not per batch."""
        if (context := trace.get_current_span().get_span_context()).is_valid:
            self._batch_spans.append((context, 0))
        # Pipeline mode: statements whose results are not needed are sent without waiting for each reply, so
        # PostgreSQL applies one while this process prepares the next.
        async with conn.pipeline():
            # First: the clock row's lock orders this batch with the leader's roll-up of hours (store.start_batch).
            rolled_through = await store.start_batch(conn, max(event_time(e) for _, e in events))
            _, settled_users = await self.record(conn, [e for _, e in events], rolled_through)
            # New trades' markets and users were flagged by their upserts (a repeated trade changes nothing): the
            # other events' markets and the users whose settlements changed are flagged here.
            await store.mark_dirty(
                conn,
                list({e.market_id for _, e in events if not isinstance(e, TradeExecuted)}),
                list(settled_users),
            )

    async def record(
        self, conn: store.Conn, events: list[Any], rolled_through: datetime | None = None
    ) -> tuple[list[TradeExecuted], set[str]]:
        """Write a batch's effects (no snapshot, nothing published); return its new trades and the users whose
        settled results changed. Trades in minutes before `rolled_through` also go into their hour and day buckets
        (None: every trade; later ones are rolled up from minutes by the leader). Replaying history into the
        tables goes through here too (bench/analytics.py)."""
        trades = [e for e in events if isinstance(e, TradeExecuted)]
        signals = [e for e in events if isinstance(e, SignalObserved)]
        predictions = [e for e in events if isinstance(e, PredictionMade)]
        ended: list[str] = []
        for event in events:  # lifecycle events are rare and their order matters: one at a time
            if isinstance(event, MarketCreated):
                await store.record_created(conn, event)
            elif type(event) in STATUS_AFTER:
                status = STATUS_AFTER[type(event)]
                resolved = isinstance(event, MarketResolved)
                await store.record_status(
                    conn, event.market_id, status, event.occurred_at,
                    resolution=event.resolution if resolved else None,
                    resolution_price=event.resolution_price if resolved else None,
                )  # fmt: skip
                if status in store.SETTLED:
                    ended.append(event.market_id)
        fresh = await store.insert_trades(conn, trades)
        await store.record_buckets(conn, [*fresh, *signals], rolled_through)
        await store.record_trades(conn, fresh)
        signal_times: dict[str, datetime] = {}
        for s in signals:
            signal_times[s.market_id] = max(signal_times.get(s.market_id, s.occurred_at), s.occurred_at)
        await store.touch_markets(conn, signal_times)
        await store.record_predictions(conn, predictions)

        # Results of markets that ended: every holder when one ends, and late trades in markets already ended.
        pairs = [pair for market_id in ended for pair in await store.holders(conn, market_id)]
        if fresh:
            done = await store.settled_markets(conn, sorted({t.market_id for t in fresh}))
            pairs += [(t.user_id, t.market_id) for t in fresh if t.market_id in done]
        settled_users = await store.settle_pairs(conn, pairs)
        if ended or any(p.final for p in predictions):
            # A market that ends, or its final prediction (emitted at resolution, so usually after it), changes
            # calibration: its cache's generation moves once this commits, so no reader keeps the old figures.
            self._calibration_changed = True
        return fresh, settled_users

    # --- snapshots ----------------------------------------------------------------------------------

    async def market_snapshots(
        self, conn: store.Conn, market_ids: list[str], as_of: datetime | None
    ) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
        """Each market's metrics at `as_of` (markets whose price is unknown are left out), and the version of
        each market's row they were computed from (every market read, with or without a snapshot)."""
        rows = await store.market_rows(conn, market_ids)
        versions = {m: r["row_version"] for m, r in rows.items()}
        ids = [m for m, r in rows.items() if r["current_price"] is not None]
        if not ids or as_of is None:
            return {}, versions
        totals = await store.window_totals(conn, ids, as_of)
        references = await store.reference_prices(conn, ids, as_of)
        active = await store.active_traders(conn, ids, as_of)
        snapshots = {}
        for market_id in ids:
            row = rows[market_id]
            prediction = row["prediction"] or {}
            snapshots[market_id] = {
                "market_id": market_id,
                "status": row["status"],
                "category": row["category"],
                "current_price": row["current_price"],
                "total_volume": round(row["total_volume"], 6),
                "trade_count": row["trade_count"],
                "participant_count": row["participant_count"],
                "predicted_probability": row["predicted_probability"],
                "model_version": row["model_version"],
                "prediction_confidence": prediction.get("confidence"),
                "as_of": as_of.isoformat(),
                "close_at": row["close_at"].isoformat() if row["close_at"] else None,
                "resolution": row["resolution"],
                "resolution_price": row["resolution_price"],
                **metrics.market_window_metrics(
                    row["current_price"],
                    references.get(market_id, row["opening_price"]),
                    totals.get(market_id, metrics.WindowTotals()),
                    active.get(market_id, 0),
                ),
            }
        return snapshots, versions

    async def snapshot_markets(self, market_ids: list[str]) -> int:
        """Recompute, publish, cache and store the snapshots of `market_ids`, in three steps, none holding a lock
        a batch waits for: read one consistent snapshot of the tables; publish (confirmed by Kafka) and cache; then
        store each snapshot and clear its market's flag where the row is still the version read (a batch that
        changed it meanwhile left it flagged, for the next round). Rounds of one replica take turns, so an older
        snapshot never follows a newer one. Returns how many snapshots were published."""
        async with self._market_round:
            async with self.db.transaction() as conn:
                await store.read_consistently(conn)
                as_of = await store.clock(conn)
                snapshots, versions = await self.market_snapshots(conn, market_ids, as_of)
            if as_of is None or not versions:
                return 0
            texts = {m: dumps(s) for m, s in snapshots.items()}
            async with self.publisher.confirmed_together():
                await self.publish_markets(snapshots, {m: _content_id("market", m, t) for m, t in texts.items()})
            await self.hot.put_markets(texts)
            async with self.db.transaction() as conn:
                await store.save_market_snapshots(conn, snapshots, texts, as_of, versions)
                unpriced = {m: v for m, v in versions.items() if m not in snapshots}
                if unpriced:  # nothing to publish before the market's price is known: just unflag
                    await store.unflag(conn, "markets", unpriced)
            return len(snapshots)

    async def publish_markets(self, snapshots: dict[str, dict[str, Any]], ids: dict[str, uuid.UUID]) -> None:
        for market_id, snapshot in snapshots.items():
            update = MarketMetricsUpdated(
                event_id=ids[market_id],
                occurred_at=snapshot["as_of"],
                producer=PRODUCER,
                **{k: v for k, v in snapshot.items() if k in MARKET_FIELDS},
            )
            await self.publisher.publish(ANALYTICS_MARKET, update)

    @staticmethod
    async def compute_users(
        conn: store.Conn, user_ids: list[str], as_of: datetime
    ) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
        """Users' metrics from their totals and open positions, marked at the markets' current prices, and the
        version of each user's row they were computed from."""
        totals, books, preferred, versions = await store.user_inputs(conn, user_ids)
        return {
            user_id: {"user_id": user_id, **user_metrics_of(totals[user_id], books[user_id], preferred[user_id], as_of)}
            for user_id in user_ids
            if user_id in totals
        }, versions

    async def user_now(self, user_id: str) -> dict[str, Any] | None:
        """A user's metrics now (for the API: prices may have moved since the user's last snapshot)."""
        async with self.db.transaction() as conn:
            await store.read_consistently(conn)
            as_of = await store.clock(conn)
            if as_of is None:
                return None
            return (await self.compute_users(conn, [user_id], as_of))[0].get(user_id)

    async def publish_users(self, snapshots: dict[str, dict[str, Any]], ids: dict[str, uuid.UUID]) -> None:
        for user_id, snapshot in snapshots.items():
            update = UserMetricsUpdated(
                event_id=ids[user_id], occurred_at=snapshot["as_of"], producer=PRODUCER, **snapshot
            )
            await self.publisher.publish(ANALYTICS_USER, update)

    async def publish_dirty(self) -> int:
        """Leader: recompute, store and publish the snapshots of flagged markets (up to `refresh_batch`).
        Returns how many. Users have their own, slower rounds (`publish_dirty_users`): a market's snapshot is
        what a trade's WebSocket update waits for, and a user's costs several times more to compute."""
        links = [trace.Link(context) for context, _ in self._batch_spans]
        kept = [(context, rounds + 1) for context, rounds in self._batch_spans if rounds == 0]
        self._batch_spans.clear()
        self._batch_spans.extend(kept)
        span = _tracer.start_as_current_span("analytics snapshot", links=links) if links else contextlib.nullcontext()
        started, committed, self._committed_since = time.monotonic(), self._committed_since, None
        with span:
            async with self.db.transaction() as conn:
                markets = await self._flagged(conn, "markets")
            done = await self.snapshot_markets(markets) if markets else 0
        ended = time.monotonic()
        self.round_seconds.labels("markets").observe(ended - started)
        if committed is not None:
            self.commit_to_published.observe(ended - committed)
        return done

    async def _flagged(self, conn: store.Conn, table: str) -> list[str]:
        """Up to `refresh_batch` flagged markets or users, going round them: after the last one read before; after
        a short read (the end), from the start again."""
        limit = self.settings.refresh_batch
        ids = await store.dirty(conn, table, limit, self._after[table])
        self._after[table] = ids[-1] if len(ids) == limit else ""
        return ids

    async def publish_dirty_users(self) -> int:
        """Leader: recompute, publish, cache and store the snapshots of up to `refresh_batch` flagged users (in
        the same three lock-free steps as markets). Returns how many flagged users it read."""
        with self.round_seconds.labels("users").time():
            return await self._publish_dirty_users()

    async def _publish_dirty_users(self) -> int:
        async with self.db.transaction() as conn:
            await store.read_consistently(conn)
            as_of = await store.clock(conn)
            users = await self._flagged(conn, "users")
            if as_of is None or not users:
                return 0
            snapshots, versions = await self.compute_users(conn, users, as_of)
        texts = {u: dumps(s) for u, s in snapshots.items()}
        async with self.publisher.confirmed_together():
            await self.publish_users(snapshots, {u: _content_id("user", u, t) for u, t in texts.items()})
        await self.hot.put_users(snapshots, texts)
        async with self.db.transaction() as conn:
            await store.save_user_snapshots(conn, versions)
        return len(users)

    # --- the leader ---------------------------------------------------------------------------------

    async def system_snapshot(self) -> SystemMetricsUpdated:
        async with self.db.transaction() as conn:
            as_of = await store.clock(conn)
            totals = await store.system_totals(conn, as_of)
            top = await store.top_market_snapshots(conn, self.settings.top_markets)
        return SystemMetricsUpdated(
            occurred_at=as_of or utcnow(),
            producer=PRODUCER,
            system_metrics=SystemMetrics(**totals),
            top_markets=[
                MarketSummary(market_id=s["market_id"], current_price=s["current_price"],
                              volume_24h=s["volume_24h"], price_change_24h=s["price_change_24h"])
                for s in top
            ],
        )  # fmt: skip

    async def refresh_windows(self) -> int:
        """Leader: move the clock to the wall clock when idle, and re-snapshot markets whose windows moved."""
        idle_for = time.monotonic() - self.last_event_monotonic
        async with self.db.transaction() as conn:
            if self.settings.idle_advance_s and idle_for >= self.settings.idle_advance_s:
                as_of = await store.advance_clock(conn, utcnow())
            else:
                as_of = await store.clock(conn)
            if as_of is None:
                return 0
            stale = await store.stale_markets(conn, as_of, self.settings.refresh_batch)
        return await self.snapshot_markets(stale) if stale else 0

    async def roll_up(self) -> int:
        """Leader: roll the minute buckets of hours the clock has left up into 1h and 1d buckets (a day at a time,
        each in its own short transaction: batches wait for it). Returns the hours rolled."""
        rolled = 0
        while True:
            async with self.db.transaction() as conn:
                hours = await store.roll_up(conn)
            rolled += hours
            if hours < 24:
                return rolled

    async def health_snapshot(self) -> PlatformHealthUpdated:
        """Read every service's /metrics and the consumer groups' lag."""
        async with httpx.AsyncClient(timeout=2.0, verify=_tls()) as client:
            results = await asyncio.gather(*(scrape(client, url) for url in self.settings.service_urls.values()))
        lags = await consumer_lag(self.settings.kafka_bootstrap_servers, self.settings.consumer_groups)
        services = []
        for (name, _), (now, error) in zip(self.settings.service_urls.items(), results, strict=True):
            health = service_health(name, now, self._scrapes.get(name), error)
            if now is not None:
                self._scrapes[name] = now
            if not health.consumer_lag and lags.get(name):
                health = health.model_copy(update={"consumer_lag": lags[name]})
            services.append(health)
        return PlatformHealthUpdated(occurred_at=utcnow(), producer=PRODUCER, services=services)

    async def lead(self) -> None:
        """Loop: while this replica holds the leader lock, keep the windows current, publish the system
        snapshot after changes (once an interval passed without one, at most five intervals after the first,
        so a burst of batches gives one snapshot; at least every heartbeat), and prune on the retention."""
        s = self.settings
        last_system = last_prune = 0.0
        try:
            while True:
                if not await self.leadership.try_acquire():
                    await asyncio.sleep(s.system_heartbeat_s)
                    continue
                timeout = max(0.0, s.system_heartbeat_s - (time.monotonic() - last_system))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), timeout=timeout)
                # Let a burst of batches land first: publish once nothing was committed for an interval, but
                # no later than five intervals after the first change.
                first_change = time.monotonic()
                while True:
                    self.changed.clear()
                    await asyncio.sleep(s.system_interval_s)
                    if not self.changed.is_set() or time.monotonic() - first_change >= 5 * s.system_interval_s:
                        break
                self.changed.clear()
                await self.publish_dirty()  # top markets from current market snapshots
                await self.refresh_windows()
                await self.roll_up()
                snapshot = await self.system_snapshot()
                await self.hot.put("system", snapshot.model_dump(mode="json"))
                await self.publisher.publish(ANALYTICS_SYSTEM, snapshot)
                last_system = time.monotonic()
                if last_system - last_prune >= s.prune_interval_s:
                    await self.prune()
                    last_prune = last_system
        finally:
            await self.leadership.release()

    async def snapshot_changes(self) -> None:
        """Loop: while this replica leads, publish the snapshots of the markets batches touched (on any replica:
        the flags are in PostgreSQL, so it also polls every `snapshot_interval_s`)."""
        s = self.settings
        while True:
            started = time.monotonic()
            self.touched.clear()  # a batch that commits from here on wakes the next round at once
            if self.leadership.is_leader:
                await self.publish_dirty()
            # Snapshots take at most `snapshot_share` of the time: under a backlog each round then covers more
            # events, so their cost per event falls instead of taking the CPU the consumer needs.
            busy = time.monotonic() - started
            await asyncio.sleep(busy * (1.0 / s.snapshot_share - 1.0))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.touched.wait(), timeout=s.snapshot_interval_s)

    async def snapshot_users(self) -> None:
        """Loop: while this replica leads, every `user_snapshot_interval_s` publish the snapshots of every user
        flagged since the last round (in chunks of `refresh_batch`), spending at most `user_snapshot_share` of
        the time on them: a user who trades many times in between gets one snapshot, not one per batch."""
        s = self.settings
        while True:
            started = time.monotonic()
            if self.leadership.is_leader:
                # Chunk after chunk until none is full (each awaits PostgreSQL, so batches and market rounds
                # run in between).
                while await self.publish_dirty_users() >= s.refresh_batch:
                    continue
            busy = time.monotonic() - started
            # The share holds while batches keep coming (a backlog); once the consumer is idle for an interval,
            # the next round comes at once, so every snapshot is current soon after the stream goes quiet.
            interval = s.user_snapshot_interval_s
            await asyncio.sleep(interval)
            stretch = started + busy / s.user_snapshot_share - time.monotonic()
            for _ in range(max(0, math.ceil(stretch / interval))):
                if time.monotonic() - self.last_event_monotonic >= interval:
                    break
                await asyncio.sleep(interval)

    async def report_health(self) -> None:
        """Loop: every health interval, the leader reads every service's /metrics and publishes the result
        (its own loop, so a slow service never delays the system snapshot)."""
        wait_s = 0.5  # the first report soon after this replica leads, then every interval
        while True:
            await asyncio.sleep(wait_s)
            if not self.leadership.is_leader:
                continue
            health = await self.health_snapshot()
            await self.hot.put(
                "health", health.model_dump(mode="json", exclude={"services": {"__all__": set(UNMEASURED)}})
            )
            await self.publisher.publish(ANALYTICS_HEALTH, health)
            wait_s = self.settings.health_interval_s

    async def prune(self) -> None:
        s = self.settings
        async with self.db.transaction() as conn:
            as_of = await store.clock(conn)
            if as_of is None:
                return
            deleted = await store.prune(
                conn,
                as_of,
                {
                    "1m": timedelta(days=s.retention_minutes_days),
                    "1h": timedelta(days=s.retention_hours_days),
                    "trades": timedelta(days=s.retention_trades_days),
                },
            )
        if deleted:
            log.info("pruned %d rows older than their retention", deleted)
