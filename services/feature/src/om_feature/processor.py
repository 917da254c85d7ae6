"""The stateful edge of feature: feeds consumed batches to the engine, publishes the vectors, writes the latest per
market to Redis, and checkpoints state + consumed offsets (+ snapshots and outcomes) in one PostgreSQL transaction.

Recovery: on assignment, the partitions' market states, offsets and applied event ids are loaded and consumption
resumes right after the last checkpoint, so nothing is applied twice. Vectors published after the last checkpoint
are published again with the same ids (they derive from market and last included event), which downstream dedupes.
After the broker lost its log, a partition is read again from the new log's start: events applied before are known
by id (the dedupe window) and change nothing, the others are applied, however old.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from opentelemetry import trace
from opentelemetry.trace import Link, SpanContext
from redis.asyncio import Redis

from om_feature import store
from om_feature.engine import Engine, Outcome, Output, Vector
from om_feature.features import FEATURE_NAMES
from om_runtime.consumer import MAX_LINKS
from om_runtime.db import Database

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)
PRODUCER = "feature"


class VectorSink(Protocol):
    """Where vectors go: (market key, JSON bytes) pairs, sent in order; `flush` waits for all acknowledgements."""

    async def send(self, messages: list[tuple[bytes, bytes]]) -> None: ...
    async def flush(self) -> None: ...


#: compute()'s features in its order, as one %-template (formatting them one by one cost a third more)
_FEATURES = ",".join(f'"{name}":%s' for name in FEATURE_NAMES)
_quoted: dict[str, str] = {}  # market ids and categories as JSON strings: each recurs with every vector


def _json_string(text: str) -> str:
    quoted = _quoted.get(text)
    if quoted is None:
        if len(_quoted) >= 100_000:
            _quoted.clear()
        quoted = _quoted[text] = json.dumps(text)
    return quoted


def encode_vector(v: Vector, produced_at: str) -> bytes:
    """A FeatureVectorComputed event as JSON, written directly rather than through the pydantic model (several
    times faster; a test checks the result against the contract). Feature values are finite floats, ints or None."""
    occurred = datetime.fromtimestamp(v.as_of, UTC).isoformat().replace("+00:00", "Z")
    values = v.features
    if tuple(values) == FEATURE_NAMES:
        features = _FEATURES % tuple(["null" if x is None else repr(x) for x in values.values()])
    else:  # (not compute()'s dict: its own keys, in its own order)
        features = ",".join(f'"{k}":{"null" if x is None else repr(x)}' for k, x in values.items())
    return (
        f'{{"event_id":"{v.event_id}","event_type":"feature.vector_computed","schema_version":1,'
        f'"occurred_at":"{occurred}","produced_at":"{produced_at}","producer":"{PRODUCER}",'
        f'"market_id":{_json_string(v.market_id)},"category":{_json_string(v.category)},"features":{{{features}}},'
        f'"source_event_id":"{v.source_event_id}"}}'
    ).encode()


class FeatureProcessor:
    def __init__(
        self,
        engine: Engine,
        db: Database,
        redis: Redis,
        sink: VectorSink,
        *,
        checkpoint_interval_s: float = 5.0,
    ) -> None:
        self.engine = engine
        self.db = db
        self.redis = redis
        self.sink = sink
        self.checkpoint_interval_s = checkpoint_interval_s
        self.offsets: dict[tuple[str, int], int] = {}  # next offset per owned (topic, partition), not yet saved
        self.snapshots: list[tuple[int, Vector]] = []  # (partition, snapshot) since the last checkpoint
        self.outcomes: list[tuple[int, Outcome]] = []
        self._last_checkpoint = time.monotonic()
        self._saved_offsets: dict[tuple[str, int], int] = {}
        self._lock = asyncio.Lock()
        self.vectors_published = 0
        self._held_batches: list[SpanContext] = []  # spans of batches whose changes the next idle flush publishes

    # --- the consume API's listener ----------------------------------------------------------------------

    async def on_assigned(self, partitions: list[tuple[str, int]]) -> Mapping[tuple[str, int], int]:
        async with self._lock, self.db.transaction() as conn:
            numbers = {p for _, p in partitions}
            states = await store.load_states(conn, numbers)
            offsets = await store.load_offsets(conn, partitions)
            outcomes = await store.load_outcomes(conn)
            since = datetime.now(UTC) - timedelta(seconds=self.engine.config.dedupe_window_s)
            applied = await store.load_applied(conn, numbers, since)
        # Whatever this process held of them is replaced by the checkpoint (a retry after a failed batch, or a
        # partition coming back): state, unsaved offsets, snapshots and outcomes alike.
        self.engine.drop_partitions(numbers)
        self.snapshots = [(p, v) for p, v in self.snapshots if p not in numbers]
        self.outcomes = [(p, o) for p, o in self.outcomes if p not in numbers]
        for tp in partitions:
            self.offsets.pop(tp, None)
        self.engine.adopt(states)
        for partition, chunks in applied.items():
            self.engine.adopt_applied(partition, chunks)
        for outcome in outcomes:
            self.engine.add_resolution(outcome)
        self.offsets.update(offsets)
        log.info("assigned %s: %d market state(s), offsets %s", sorted(partitions), len(states), offsets)
        return offsets

    async def on_revoked(self, partitions: list[tuple[str, int]]) -> None:
        async with self._lock:
            await self._checkpoint()
            numbers = {p for _, p in partitions}
            self.engine.drop_partitions(numbers)
            for tp in partitions:
                self.offsets.pop(tp, None)
        log.info("revoked %s after a checkpoint", sorted(partitions))

    async def on_offset_regression(self, partition: tuple[str, int], stored: int, log_end: int, start: int) -> None:
        """The broker lost its log and the partition is read again from `start`, the new log's beginning: the next
        checkpoint must save that position, not the lost log's. Events come again with new offsets; those applied
        before are known by event id (the dedupe window) and change nothing."""
        self.offsets[partition] = start
        log.warning(
            "%s-%d: the broker lost its log (next offset %d, log end %d); reading it again from %d, deduping by "
            "event id",
            *partition,
            stored,
            log_end,
            start,
        )

    # --- processing ------------------------------------------------------------------------------------

    async def process(self, deliveries: list[Any]) -> list[tuple[Any, str]]:
        """Apply a batch of deliveries (topic, event, partition, offset); return the rejected ones with reasons."""
        async with self._lock:
            out = self.engine.process((d.event, d.partition, d) for d in deliveries)
            for d in deliveries:
                self.offsets[(d.topic.name, d.partition)] = d.offset + 1
            await self._publish(out)
            if self.engine.unpublished:  # some of this batch's changes wait for a later vector: remember its span
                context = trace.get_current_span().get_span_context()
                if context.is_valid:
                    self._held_batches = [*self._held_batches[-(MAX_LINKS - 1) :], context]
            if time.monotonic() - self._last_checkpoint >= self.checkpoint_interval_s:
                await self._checkpoint()
            return out.rejected

    async def on_idle(self) -> None:
        """Nothing arrived for a while: publish what coalescing still holds (the last vector of each burst), in a
        span linked to the batches those changes came in, so a trace walk continues from them to the vectors."""
        if self.engine.unpublished:
            async with self._lock:
                links = [Link(c) for c in self._held_batches]
                self._held_batches = []
                with tracer.start_as_current_span("feature flush", links=links):
                    await self._publish(self.engine.flush())

    async def _publish(self, out: Output) -> None:
        """Vectors to Kafka and the latest per market to Redis; snapshots and outcomes wait for the checkpoint."""
        if out.vectors:
            produced_at = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            messages = []
            latest: dict[str, bytes] = {}
            for v in out.vectors:
                body = encode_vector(v, produced_at)
                messages.append((v.market_id.encode(), body))
                latest[v.market_id] = body
            await self.sink.send(messages)
            await store.write_online(self.redis, latest)
            self.vectors_published += len(messages)
        markets = self.engine.markets
        self.snapshots.extend((markets[v.market_id].partition, v) for v in out.snapshots)
        self.outcomes.extend((markets[o.market_id].partition, o) for o in out.outcomes)

    async def checkpoint(self) -> None:
        async with self._lock:
            await self._checkpoint()

    async def checkpoint_periodically(self) -> None:
        """Checkpoint what a quiet stream left unsaved (batches checkpoint only when they arrive)."""
        while True:
            await asyncio.sleep(self.checkpoint_interval_s)
            if time.monotonic() - self._last_checkpoint >= self.checkpoint_interval_s and self._unsaved():
                await self.checkpoint()

    def _unsaved(self) -> bool:
        return bool(
            self.engine.dirty
            or self.snapshots
            or self.outcomes
            or self.offsets != self._saved_offsets
            or self.engine.fresh_applied()
        )

    async def _checkpoint(self) -> None:
        """Vectors first (acknowledged), then state + offsets + snapshots + outcomes in one transaction."""
        await self.sink.flush()
        states = self.engine.take_dirty()
        now = time.time()
        try:
            async with self.db.transaction() as conn:
                await store.save_checkpoint(
                    conn,
                    states,
                    self.offsets,
                    [v for _, v in self.snapshots],
                    [o for _, o in self.outcomes],
                    applied=self.engine.fresh_applied(),
                    saved_at=datetime.fromtimestamp(now, UTC),
                    forget_before=datetime.fromtimestamp(now - self.engine.config.dedupe_window_s, UTC),
                )
        except BaseException:
            self.engine.dirty.update(s.market_id for s in states)  # still to save next time (the ids stay fresh)
            raise
        self.engine.seal_applied(now)
        self.snapshots, self.outcomes = [], []
        self._saved_offsets = dict(self.offsets)
        self._last_checkpoint = time.monotonic()
