"""om_runtime.db without PostgreSQL: `migrate` hands yoyo the right URL and creates the schema first.
(`transactional` is tested against a real PostgreSQL in test_transactional_integration.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yoyo
from psycopg import sql
from yoyo.backends import get_backend_class
from yoyo.backends.core.postgresql import PostgresqlPsycopgBackend
from yoyo.connections import parse_uri

from om_runtime import db
from om_runtime.db import Database, migrate

# --- migrate and Database, without a server ---------------------------------------------------------


class FakeBackend:
    def __init__(self, pending: list[str]) -> None:
        self.pending = pending
        self.log: list[Any] = []
        self.connection = self

    @contextmanager
    def lock(self) -> Iterator[None]:
        self.log.append("lock")
        yield
        self.log.append("unlock")

    def to_apply(self, migrations: Any) -> list[str]:
        self.log.append(("to_apply", migrations))
        return self.pending

    def apply_migrations(self, pending: list[str]) -> None:
        self.log.append(("apply", list(pending)))

    def close(self) -> None:
        self.log.append("close")


class FakeSyncConnection:
    def __init__(self) -> None:
        self.executed: list[Any] = []

    def __enter__(self) -> FakeSyncConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.executed.append("closed")

    def execute(self, query: Any) -> None:
        self.executed.append(query)


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    seen: dict[str, Any] = {"connect": [], "backend_urls": [], "conn": FakeSyncConnection()}
    seen["backend"] = FakeBackend(["0001_init", "0002_more"])

    def connect(url: str, **kwargs: Any) -> FakeSyncConnection:
        seen["connect"].append((url, kwargs))
        return seen["conn"]

    def get_backend(url: str, migration_table: str) -> FakeBackend:
        seen["backend_urls"].append((url, migration_table))
        return seen["backend"]

    monkeypatch.setattr(db.psycopg, "connect", connect)
    monkeypatch.setattr(yoyo, "get_backend", get_backend)
    monkeypatch.setattr(yoyo, "read_migrations", lambda path: ("migrations from", path))
    return seen


@pytest.mark.parametrize(
    ("database_url", "yoyo_url"),
    [
        ("postgresql://app:secret@db:5432/om", "postgresql+psycopg://app:secret@db:5432/om?schema=feature"),
        ("postgres://app@db/om", "postgresql+psycopg://app@db/om?schema=feature"),
        (
            "postgresql://app:p%40ss%2Fword@db/om?sslmode=require",
            "postgresql+psycopg://app:p%40ss%2Fword@db/om?sslmode=require&schema=feature",
        ),
        # a socket URL loses its empty authority ("//"), which yoyo parses the same way
        ("postgresql:///om?host=/run/postgresql", "postgresql+psycopg:/om?host=/run/postgresql&schema=feature"),
    ],
)
def test_migrate_creates_the_schema_and_hands_yoyo_a_psycopg3_url(
    no_server: dict[str, Any], tmp_path: Path, database_url: str, yoyo_url: str
) -> None:
    assert migrate(database_url, "feature", tmp_path) == 2

    assert no_server["connect"] == [(database_url, {"autocommit": True})]
    create, closed = no_server["conn"].executed
    assert create == sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier("feature"))
    assert closed == "closed"
    assert no_server["backend_urls"] == [(yoyo_url, "schema_migrations")]
    assert no_server["backend"].log == [
        "lock",
        ("to_apply", ("migrations from", str(tmp_path))),
        ("apply", ["0001_init", "0002_more"]),
        "unlock",
        "close",
    ]
    # yoyo reads it as its Psycopg 3 backend, in the service's schema, with the original credentials
    parsed = parse_uri(yoyo_url)
    assert get_backend_class(parsed.scheme) is PostgresqlPsycopgBackend
    assert parsed.args["schema"] == "feature"
    original = parse_uri(database_url)
    assert (parsed.username, parsed.password, parsed.hostname, parsed.port, parsed.database) == (
        original.username,
        original.password,
        original.hostname,
        original.port,
        original.database,
    )


def test_migrate_with_nothing_pending_returns_zero_and_closes(no_server: dict[str, Any], tmp_path: Path) -> None:
    no_server["backend"].pending = []
    assert migrate("postgresql://db/om", "feature", tmp_path) == 0
    assert no_server["backend"].log[-1] == "close"


def test_migrate_closes_the_backend_when_a_migration_fails(no_server: dict[str, Any], tmp_path: Path) -> None:
    def fail(pending: list[str]) -> None:
        raise RuntimeError("syntax error at or near")

    no_server["backend"].apply_migrations = fail
    with pytest.raises(RuntimeError, match="syntax error"):
        migrate("postgresql://db/om", "feature", tmp_path)
    assert no_server["backend"].log[-1] == "close"


async def test_database_migrates_then_opens_its_pool_and_closes_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    log: list[Any] = []
    monkeypatch.setattr(db, "migrate", lambda url, schema, migrations: log.append(("migrate", url, schema, migrations)))
    database = Database("postgresql://db/om", schema="feature", migrations=tmp_path, pool_size=3)
    assert database.pool.kwargs["options"] == "-c search_path=feature"
    assert (database.pool.min_size, database.pool.max_size) == (1, 3)

    async def pool_open(wait: bool, timeout: float) -> None:  # noqa: ASYNC109 (the pool's signature)
        log.append(("open", wait, timeout))

    async def pool_close() -> None:
        log.append("close")

    monkeypatch.setattr(database, "_ensure_runtime_tables", lambda: log.append("runtime tables"))
    monkeypatch.setattr(database.pool, "open", pool_open)
    monkeypatch.setattr(database.pool, "close", pool_close)
    async with database as opened:
        assert opened is database
        log.append("in use")

    assert log == [
        ("migrate", "postgresql://db/om", "feature", tmp_path),
        "runtime tables",
        ("open", True, 30),
        "in use",
        "close",
    ]
