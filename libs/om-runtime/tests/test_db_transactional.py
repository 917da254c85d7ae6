"""om_runtime.db without PostgreSQL: `transactional` claims a batch's event ids and applies only the fresh ones in
one transaction, confirming what handlers publish before the commit; `migrate` hands yoyo the right URL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yoyo
from psycopg import sql
from yoyo.backends import get_backend_class
from yoyo.backends.core.postgresql import PostgresqlPsycopgBackend
from yoyo.connections import parse_uri

from om_contracts import MarketCreated, TradeExecuted
from om_contracts.topics import MARKET_LIFECYCLE, MARKET_TRADES, PREDICTIONS
from om_runtime import db
from om_runtime.db import Database, migrate, transactional
from om_runtime.kafka import EventPublisher


def trade(trade_id: str) -> TradeExecuted:
    return TradeExecuted(
        occurred_at=datetime.now(UTC),
        producer="test",
        trade_id=trade_id,
        market_id="m1",
        user_id="alice",
        outcome="YES",
        amount=10.0,
        shares=16.0,
        price_before=0.5,
        price_after=0.6,
    )


def created() -> MarketCreated:
    now = datetime.now(UTC)
    return MarketCreated(
        occurred_at=now, producer="test", market_id="m1", question="?", category="c", close_at=now + timedelta(days=1)
    )


class FakeCursor:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    async def fetchall(self) -> list[dict[str, Any]]:
        return self.rows


class FakeConnection:
    """Answers the claim statement as PostgreSQL would: each id not yet processed, once (dict rows)."""

    def __init__(self, fresh: set[str]) -> None:
        self.fresh = fresh
        self.statements: list[tuple[str, Any]] = []

    async def execute(self, query: str, params: Any = None) -> FakeCursor:
        self.statements.append((query, params))
        (ids,) = params
        return FakeCursor([{"event_id": i} for i in dict.fromkeys(ids) if i in self.fresh])


class FakeDatabase:
    def __init__(self, fresh: set[str]) -> None:
        self.conn = FakeConnection(fresh)
        self.log: list[str] = []

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[FakeConnection]:
        self.log.append("begin")
        try:
            yield self.conn
        except BaseException:
            self.log.append("rollback")
            raise
        self.log.append("commit")


class FakeBroker:
    """KafkaBroker.publish with confirmations the test settles (inside confirmed_together) or immediate ones."""

    def __init__(self) -> None:
        self.published: list[str] = []
        self.futures: list[asyncio.Future[str]] = []

    async def publish(self, value: bytes, topic: str, **kwargs: Any) -> Any:
        self.published.append(topic)
        if kwargs.get("no_confirm"):
            self.futures.append(future := asyncio.get_running_loop().create_future())
            return future
        return "metadata"


class Recorder:
    def __init__(self, database: FakeDatabase) -> None:
        self.database = database
        self.calls: list[tuple[str, Any, Any]] = []

    def handler(self, name: str) -> Any:
        async def handle(event: Any, conn: Any) -> None:
            self.calls.append((name, event, conn))

        return handle

    def after_commit(self) -> None:
        self.database.log.append("after_commit")


async def test_only_fresh_events_reach_their_topic_handler() -> None:
    a, b, c = trade("a"), trade("b"), created()
    database = FakeDatabase(fresh={str(a.event_id), str(c.event_id)})  # b was processed before
    rec = Recorder(database)
    process = transactional(
        database,  # type: ignore[arg-type]
        EventPublisher(FakeBroker()),  # type: ignore[arg-type]
        {MARKET_TRADES: rec.handler("trade"), MARKET_LIFECYCLE: rec.handler("lifecycle")},
        after_commit=rec.after_commit,
    )

    await process([(MARKET_TRADES, a), (MARKET_TRADES, b), (MARKET_LIFECYCLE, c)])

    assert [(name, event) for name, event, _ in rec.calls] == [("trade", a), ("lifecycle", c)]
    assert all(conn is database.conn for _, _, conn in rec.calls)  # each handler works in the transaction
    [(query, params)] = database.conn.statements
    assert query.startswith("INSERT INTO processed_events (event_id)")
    assert "ON CONFLICT DO NOTHING" in query and "RETURNING event_id" in query
    assert params == ([str(a.event_id), str(b.event_id), str(c.event_id)],)  # one statement, batch order
    assert database.log == ["begin", "commit", "after_commit"]


async def test_a_repeat_later_in_the_same_batch_is_skipped() -> None:
    a, b = trade("a"), trade("b")
    database = FakeDatabase(fresh={str(a.event_id), str(b.event_id)})
    rec = Recorder(database)
    process = transactional(database, EventPublisher(FakeBroker()), {MARKET_TRADES: rec.handler("trade")})  # type: ignore[arg-type]

    await process([(MARKET_TRADES, a), (MARKET_TRADES, b), (MARKET_TRADES, a)])

    assert [event for _, event, _ in rec.calls] == [a, b]
    assert database.log == ["begin", "commit"]


async def test_a_batch_of_duplicates_applies_nothing() -> None:
    database = FakeDatabase(fresh=set())
    rec = Recorder(database)
    process = transactional(database, EventPublisher(FakeBroker()), {MARKET_TRADES: rec.handler("trade")})  # type: ignore[arg-type]

    await process([(MARKET_TRADES, trade("a")), (MARKET_TRADES, trade("b"))])

    assert rec.calls == []
    assert database.log == ["begin", "commit"]


async def test_a_failing_handler_rolls_back_and_skips_after_commit() -> None:
    a, b = trade("a"), trade("b")
    database = FakeDatabase(fresh={str(a.event_id), str(b.event_id)})
    rec = Recorder(database)

    async def explode(event: Any, conn: Any) -> None:
        if event is b:
            raise ValueError("constraint violated")
        await rec.handler("trade")(event, conn)

    process = transactional(
        database,  # type: ignore[arg-type]
        EventPublisher(FakeBroker()),  # type: ignore[arg-type]
        {MARKET_TRADES: explode},
        after_commit=rec.after_commit,
    )
    with pytest.raises(ValueError, match="constraint violated"):
        await process([(MARKET_TRADES, a), (MARKET_TRADES, b)])

    assert [event for _, event, _ in rec.calls] == [a]
    assert database.log == ["begin", "rollback"]  # a's effects and both claims are undone


async def test_what_handlers_publish_is_confirmed_before_the_commit() -> None:
    a = trade("a")
    database = FakeDatabase(fresh={str(a.event_id)})
    rec = Recorder(database)
    broker = FakeBroker()
    publisher = EventPublisher(broker)  # type: ignore[arg-type]

    async def republish(event: TradeExecuted, conn: Any) -> None:
        await publisher.publish_bytes(PREDICTIONS.name, b"{}", key=b"m1", headers={})
        await publisher.publish_bytes(PREDICTIONS.name, b"{}", key=b"m1", headers={})

    process = transactional(database, publisher, {MARKET_TRADES: republish}, after_commit=rec.after_commit)  # type: ignore[arg-type]
    task = asyncio.create_task(process([(MARKET_TRADES, a)]))
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(broker.futures) == 2
    assert database.log == ["begin"]  # not committed while Kafka has not confirmed

    broker.futures[0].set_result("ok")
    broker.futures[1].set_result("ok")
    await asyncio.wait_for(task, 1.0)
    assert database.log == ["begin", "commit", "after_commit"]


async def test_a_failed_confirmation_rolls_the_batch_back() -> None:
    a = trade("a")
    database = FakeDatabase(fresh={str(a.event_id)})
    rec = Recorder(database)
    broker = FakeBroker()
    publisher = EventPublisher(broker)  # type: ignore[arg-type]

    async def republish(event: TradeExecuted, conn: Any) -> None:
        await publisher.publish_bytes(PREDICTIONS.name, b"{}", key=b"m1", headers={})

    process = transactional(database, publisher, {MARKET_TRADES: republish}, after_commit=rec.after_commit)  # type: ignore[arg-type]
    task = asyncio.create_task(process([(MARKET_TRADES, a)]))
    for _ in range(5):
        await asyncio.sleep(0)
    broker.futures[0].set_exception(ConnectionError("broker gone"))

    with pytest.raises(ConnectionError, match="broker gone"):
        await asyncio.wait_for(task, 1.0)
    assert database.log == ["begin", "rollback"]


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

    monkeypatch.setattr(database.pool, "open", pool_open)
    monkeypatch.setattr(database.pool, "close", pool_close)
    async with database as opened:
        assert opened is database
        log.append("in use")

    assert log == [("migrate", "postgresql://db/om", "feature", tmp_path), ("open", True, 30), "in use", "close"]
