"""PostgreSQL access: an async psycopg 3 pool bound to the service's own schema, and its migrations.

Each service owns one schema. Migrations are plain SQL files in the service's `migrations/` folder, applied with
yoyo (which takes a lock, so replicas starting together apply each migration once).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from om_contracts import Topic
from om_runtime.consumer import DeliveryProcessor
from om_runtime.kafka import Delivery, EventPublisher
from om_runtime.offsets import Partition, claim_events, ensure_runtime_tables, load_offsets, prune_events, save_offsets

log = logging.getLogger(__name__)

#: Applies one event using the caller's transaction.
TxHandler = Callable[[Any, psycopg.AsyncConnection], Awaitable[None]]
#: Applies a batch's new events, in order, each with its topic, using the caller's transaction.
TxBatchHandler = Callable[[list[tuple[Topic, Any]], psycopg.AsyncConnection], Awaitable[None]]


def migrate(database_url: str, schema: str, migrations: Path) -> int:
    """Create `schema` if needed and apply pending migrations from `migrations`; return how many ran."""
    from yoyo import get_backend, read_migrations

    with psycopg.connect(database_url, autocommit=True) as conn:
        try:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateSchema):
            pass  # another replica starting at the same moment created it (IF NOT EXISTS does not lock the name)
    parts = urlsplit(database_url)
    query = "&".join(q for q in (parts.query, urlencode({"schema": schema})) if q)
    yoyo_url = urlunsplit(("postgresql+psycopg", parts.netloc, parts.path, query, ""))
    backend = get_backend(yoyo_url, migration_table="schema_migrations")
    try:
        with backend.lock():
            pending = backend.to_apply(read_migrations(str(migrations)))
            backend.apply_migrations(pending)
    finally:
        backend.connection.close()
    if pending:
        log.info("applied %d migration(s) to schema %s", len(pending), schema)
    return len(pending)


class Database:
    """A connection pool whose connections see only the service's schema (via `search_path`)."""

    def __init__(
        self,
        database_url: str,
        *,
        schema: str,
        migrations: Path,
        pool_size: int = 5,
        read_url: str | None = None,
    ) -> None:
        self.url = database_url
        self.read_url = read_url
        self.schema = schema
        self.migrations = migrations
        self.pool = AsyncConnectionPool(
            database_url,
            min_size=1,
            max_size=pool_size,
            open=False,
            kwargs={"options": f"-c search_path={schema}", "row_factory": dict_row},
        )
        #: Connections to the read replica (DATABASE_READ_URL) for query paths; the primary's pool without one.
        self.read_pool = (
            AsyncConnectionPool(
                read_url,
                min_size=1,
                max_size=pool_size,
                open=False,
                kwargs={"options": f"-c search_path={schema}", "row_factory": dict_row},
            )
            if read_url
            else self.pool
        )

    async def __aenter__(self) -> Database:
        await asyncio.to_thread(migrate, self.url, self.schema, self.migrations)
        await asyncio.to_thread(self._ensure_runtime_tables)
        await self.pool.open(wait=True, timeout=30)
        if self.read_pool is not self.pool:
            await self.read_pool.open(wait=True, timeout=30)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.read_pool is not self.pool:
            await self.read_pool.close()
        await self.pool.close()

    def _ensure_runtime_tables(self) -> None:
        options = f"-c search_path={self.schema}"
        with psycopg.connect(self.url, options=options, row_factory=dict_row) as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('om_runtime_tables'))")  # replicas start together
            ensure_runtime_tables(conn)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        async with self.pool.connection() as conn, conn.transaction():
            yield conn

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A connection for queries: the read replica's when DATABASE_READ_URL is set (it may lag the primary by
        replication delay), else the primary's."""
        async with self.read_pool.connection() as conn:
            yield conn

    def pool_stats(self) -> dict[str, dict[str, int]]:
        """psycopg_pool's statistics of each pool ("primary", and "replica" with DATABASE_READ_URL): what the
        runtime's `om_db_pool_*` series show when /metrics is scraped."""
        stats = {"primary": self.pool.get_stats()}
        if self.read_pool is not self.pool:
            stats["replica"] = self.read_pool.get_stats()
        return stats

    async def ping(self) -> None:
        async with self.pool.connection(timeout=2) as conn:
            await conn.execute("SELECT 1")


def transactional(
    db: Database,
    publisher: EventPublisher,
    handlers: Mapping[Topic, TxHandler] | TxBatchHandler,
    *,
    consumer: str,
    after_commit: Callable[[], None] | None = None,
) -> DeliveryProcessor:
    """A delivery processor that applies a batch's events in one transaction, each exactly once.

    The transaction that holds the events' effects also saves the consumed offsets (`consumer_offsets`), so a batch
    redelivered after a crash starts where the last commit left off. The batch's event ids are claimed in the
    bounded dedupe window (`consumed_events`) in one statement; events applied before under another offset (a
    producer's retry, a replay, a broker that lost its log) or repeated within the batch are skipped. The rest go,
    with the transaction's connection, one by one to their topic's handler (a mapping) or all at once to a batch
    handler (a callable). What handlers publish is confirmed by Kafka before the commit: a failure rolls back.
    """

    async def process(deliveries: list[Delivery], offsets: Mapping[Partition, int]) -> None:
        async with db.transaction() as conn, publisher.confirmed_together():
            claimed = await claim_events(conn, [d.event.event_id for d in deliveries])
            fresh = []
            for d in deliveries:
                if d.event.event_id in claimed:
                    claimed.discard(d.event.event_id)  # a repeat later in the same batch is a duplicate too
                    fresh.append((d.topic, d.event))
            if not isinstance(handlers, Mapping):
                if fresh:
                    await handlers(fresh, conn)
            else:
                for topic, event in fresh:
                    await handlers[topic](event, conn)
            await save_offsets(conn, consumer, offsets)
        if after_commit is not None and deliveries:
            after_commit()

    return process


class StoredOffsets:
    """The partition listener of a transactional consumer: resume where the last committed transaction ended."""

    def __init__(self, db: Database, consumer: str) -> None:
        self.db = db
        self.consumer = consumer

    async def on_assigned(self, partitions: list[Partition]) -> Mapping[Partition, int]:
        async with self.db.pool.connection(timeout=10) as conn:
            return await load_offsets(conn, self.consumer, partitions)

    async def on_revoked(self, partitions: list[Partition]) -> None:
        return None  # every batch commits its offsets before the next one starts


async def prune_dedupe_window(db: Database, window: timedelta, *, interval_s: float = 600.0) -> None:
    """Forget applied event ids older than `window`, every `interval_s`, until cancelled."""
    while True:
        while True:
            async with db.transaction() as conn:
                removed = await prune_events(conn, window)
            if removed:
                log.info("forgot %d event id(s) older than %s", removed, window)
            if removed < 50_000:
                break
        await asyncio.sleep(interval_s)
