"""Leader election through a PostgreSQL advisory lock: of all replicas, the one holding the lock publishes the
system and health snapshots. The lock lives on its own connection, so it ends when that replica dies."""

from __future__ import annotations

import contextlib
import logging

import psycopg

log = logging.getLogger(__name__)

#: Advisory lock key (any 64-bit number unique to this role): "analytic" in ASCII.
LOCK_KEY = 0x616E616C79746963


class Leadership:
    def __init__(self, database_url: str, key: int = LOCK_KEY) -> None:
        self.database_url = database_url
        self.key = key
        self._conn: psycopg.AsyncConnection | None = None

    @property
    def is_leader(self) -> bool:
        return self._conn is not None and not self._conn.closed

    async def try_acquire(self) -> bool:
        """Become (or stay) leader if no other replica is; False if another holds the lock."""
        if self._conn is not None:
            try:
                await self._conn.execute("SELECT 1")  # still connected, so the lock is still ours
                return True
            except psycopg.Error:
                log.warning("lost the leader connection; standing down")
                await self.release()
        conn = await psycopg.AsyncConnection.connect(self.database_url, autocommit=True)
        cur = await conn.execute("SELECT pg_try_advisory_lock(%s) AS won", (self.key,))
        row = await cur.fetchone()
        if row is not None and row[0]:
            self._conn = conn
            log.info("this replica is now the analytics leader")
            return True
        await conn.close()
        return False

    async def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                await conn.close()  # closing the session releases the lock
