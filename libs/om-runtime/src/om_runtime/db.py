"""PostgreSQL access: an async psycopg 3 pool bound to the service's own schema, and its migrations.

Each service owns one schema. Migrations are plain SQL files in the service's `migrations/` folder, applied with
yoyo (which takes a lock, so replicas starting together apply each migration once).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from om_contracts import Topic
from om_runtime.kafka import BatchHandler, EventPublisher

log = logging.getLogger(__name__)

#: Applies one event using the caller's transaction.
TxHandler = Callable[[Any, psycopg.AsyncConnection], Awaitable[None]]
#: Applies a batch's new events, in order, each with its topic, using the caller's transaction.
TxBatchHandler = Callable[[list[tuple[Topic, Any]], psycopg.AsyncConnection], Awaitable[None]]


def migrate(database_url: str, schema: str, migrations: Path) -> int:
    """Create `schema` if needed and apply pending migrations from `migrations`; return how many ran."""
    from yoyo import get_backend, read_migrations

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
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

    def __init__(self, database_url: str, *, schema: str, migrations: Path, pool_size: int = 5) -> None:
        self.url = database_url
        self.schema = schema
        self.migrations = migrations
        self.pool = AsyncConnectionPool(
            database_url,
            min_size=1,
            max_size=pool_size,
            open=False,
            kwargs={"options": f"-c search_path={schema}", "row_factory": dict_row},
        )

    async def __aenter__(self) -> Database:
        await asyncio.to_thread(migrate, self.url, self.schema, self.migrations)
        await self.pool.open(wait=True, timeout=30)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.pool.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[psycopg.AsyncConnection]:
        async with self.pool.connection() as conn, conn.transaction():
            yield conn

    async def ping(self) -> None:
        async with self.pool.connection(timeout=2) as conn:
            await conn.execute("SELECT 1")


def transactional(
    db: Database,
    publisher: EventPublisher,
    handlers: Mapping[Topic, TxHandler] | TxBatchHandler,
    *,
    after_commit: Callable[[], None] | None = None,
) -> BatchHandler:
    """A batch handler that applies a batch's events in one transaction, each exactly once.

    The batch's event ids are claimed in `processed_events` in one statement; events already processed (a
    redelivery, or a repeat within the batch) are skipped. The remaining events go, with the transaction's
    connection, either one by one to their topic's handler (a mapping) or all at once to a batch handler (a
    callable, for services that save work by grouping), so their effects commit together with their claims.
    What handlers publish is confirmed by Kafka before the commit: a failure rolls the batch back.
    """

    async def process(events: list[tuple[Topic, Any]]) -> None:
        async with db.transaction() as conn, publisher.confirmed_together():
            cur = await conn.execute(
                "INSERT INTO processed_events (event_id) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING "
                "RETURNING event_id",
                ([str(e.event_id) for _, e in events],),
            )
            # The pool's connections use dict_row; psycopg's types assume tuple rows.
            claimed = {row["event_id"] for row in await cur.fetchall()}  # type: ignore[call-overload]
            fresh = []
            for topic, event in events:
                if (event_id := str(event.event_id)) in claimed:
                    claimed.discard(event_id)  # a repeat later in the same batch is a duplicate too
                    fresh.append((topic, event))
            if not isinstance(handlers, Mapping):
                if fresh:
                    await handlers(fresh, conn)
            else:
                for topic, event in fresh:
                    await handlers[topic](event, conn)
        if after_commit is not None:
            after_commit()

    return process
