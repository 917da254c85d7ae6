"""A read-only connection pool for query endpoints, pointed at a replica (`DATABASE_READ_URL`).

Unlike `om_runtime.db.Database` it runs no migrations (a replica cannot take writes; the primary's schema
replicates to it)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool


class ReadDatabase:
    def __init__(self, url: str, *, schema: str, pool_size: int = 5) -> None:
        self.url = url
        self.pool = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            open=False,
            kwargs={"options": f"-c search_path={schema} -c default_transaction_read_only=on", "row_factory": dict_row},
        )

    async def __aenter__(self) -> ReadDatabase:
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
