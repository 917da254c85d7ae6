"""feature as real processes on the embedded broker, PostgreSQL and Redis: killed with SIGKILL mid-stream and
restarted, or sharing the topics with a second process that is stopped mid-stream, every market's final state
equals one replay of the whole stream — nothing lost, nothing counted twice.

`make test-feature-crash` runs the crash test on 100,000 trades (FEATURE_CRASH_TRADES); `make test` on 3,000.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

# bandit: pickle reads the checkpoints the processes under test wrote; subprocess starts the service under test
import pickle  # nosec B403
import signal
import subprocess  # nosec B404
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from om_cli.embedded import free_port
from om_contracts import decode
from om_contracts.topics import topic
from om_feature import synthetic
from om_feature.engine import Engine
from om_feature.rebuild import rebuild
from om_feature.settings import FeatureSettings
from om_feature.synthetic import StreamSpec

# Real processes start slowly on a busy machine: a longer per-test limit than the suite default.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
TRADES = int(os.environ.get("FEATURE_CRASH_TRADES", "3000"))


def spec(trades: int) -> StreamSpec:
    return StreamSpec(markets=max(30, trades // 400), trades=trades, users=500, resolve_every=5, spacing_ms=2.0)


@contextmanager
def feature_process(infra_env: dict[str, str], log: Path | None = None) -> Iterator[subprocess.Popen]:
    env = {
        **os.environ,
        **infra_env,
        "FEATURE_HTTP_PORT": str(free_port()),
        "FEATURE_CHECKPOINT_INTERVAL_S": "0.2",
        "FEATURE_MAX_BATCH": "250",
        "FEATURE_LOG_LEVEL": "INFO" if log else "WARNING",
    }
    with open(log or os.devnull, "wb") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "om_feature"], env=env, stderr=stderr)  # nosec B603
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)


def consumed(database_url: str) -> int:
    """Events covered by the last checkpoint (the sum of the next offsets saved), 0 before the first."""
    try:
        with psycopg.connect(database_url) as conn:
            conn.execute(sql.SQL("SET search_path = feature"))
            row = conn.execute("SELECT coalesce(sum(next_offset), 0) FROM checkpoint_offsets").fetchone()
            return int(row[0]) if row else 0
    except psycopg.errors.UndefinedTable:
        return 0


async def wait_for(predicate, timeout_s: float, what: str, processes: list[subprocess.Popen]) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        for p in processes:
            assert p.poll() is None, f"a feature process exited ({p.returncode}) while waiting for {what}"
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def saved_states(database_url: str) -> dict[str, tuple]:
    with psycopg.connect(database_url) as conn:
        conn.execute(sql.SQL("SET search_path = feature"))
        rows = conn.execute("SELECT market_id, state FROM market_checkpoint").fetchall()
        outcomes = conn.execute("SELECT count(*) FROM market_outcomes").fetchone()
    states = {market: pickle.loads(state) for market, state in rows}  # nosec B301
    assert outcomes is not None
    return {m: s.semantic() for m, s in states.items()} | {"#outcomes": (outcomes[0],)}


def replay(messages: list[tuple[str, bytes, bytes]]) -> dict[str, tuple]:
    """One in-process pass over the whole stream: the reference."""
    engine = Engine()
    engine.process((decode(topic(t), v), 0, None) for t, _, v in messages)
    outcomes = sum(1 for s in engine.markets.values() if s.status == "resolved")
    return {m: s.semantic() for m, s in engine.markets.items()} | {"#outcomes": (outcomes,)}


async def test_sigkill_mid_stream_then_restart_equals_one_replay(infra_env: dict[str, str]) -> None:
    messages = list(synthetic.stream(spec(TRADES)))
    # The second half is produced only after the kill, so the kill always lands mid-stream, however fast the
    # machine: work the first process did after its last checkpoint is lost and must be redone exactly once.
    first_half, second_half = messages[: len(messages) // 2], messages[len(messages) // 2 :]
    bootstrap, db = infra_env["KAFKA_BOOTSTRAP_SERVERS"], infra_env["DATABASE_URL"]
    await synthetic.produce(bootstrap, first_half)
    with feature_process(infra_env) as first:
        await wait_for(lambda: consumed(db) >= len(messages) // 3, 120, "a third of the stream", [first])
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    at_kill = consumed(db)
    assert at_kill < len(messages), "the stream was already done: the kill proved nothing"
    await synthetic.produce(bootstrap, second_half)
    with feature_process(infra_env) as second:
        await wait_for(lambda: consumed(db) >= len(messages), 400, "the whole stream", [second])
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
    assert saved_states(db) == replay(messages)


async def test_two_processes_one_stopped_mid_stream_equal_one_replay(infra_env: dict[str, str], tmp_path: Path) -> None:
    messages = list(synthetic.stream(spec(3000)))
    creations = [m for m in messages if m[0] == "market.lifecycle.v1"][: spec(3000).markets]
    rest = messages[len(creations) :]
    first_half, second_half = creations + rest[: len(rest) // 2], rest[len(rest) // 2 :]
    bootstrap, db = infra_env["KAFKA_BOOTSTRAP_SERVERS"], infra_env["DATABASE_URL"]
    await synthetic.produce(bootstrap, first_half)
    log_one, log_two = tmp_path / "one.log", tmp_path / "two.log"
    with contextlib.ExitStack() as stack:
        one = stack.enter_context(feature_process(infra_env, log_one))
        # The second starts once the first has migrated: two concurrent CREATE SCHEMA IF NOT EXISTS can collide
        # in PostgreSQL (the runtime's migrate takes no lock), and that failure is not what this test is about.
        await wait_for(lambda: "feature started" in log_one.read_text(errors="replace"), 120, "the first start", [one])
        two = stack.enter_context(feature_process(infra_env, log_two))
        await wait_for(lambda: consumed(db) >= len(first_half), 300, "the first half", [one, two])
        await wait_for(lambda: _owns_partitions(log_two), 60, "the second process to own partitions", [one, two])
        two.send_signal(signal.SIGTERM)  # its partitions move to `one` after its last checkpoint
        two.wait(timeout=30)
        await synthetic.produce(bootstrap, second_half)
        await wait_for(lambda: consumed(db) >= len(messages), 400, "the whole stream", [one])
        one.send_signal(signal.SIGTERM)
        one.wait(timeout=30)
    assert _owns_partitions(log_one)
    assert saved_states(db) == replay(messages)


def _owns_partitions(log: Path) -> bool:
    """Whether the process's log says it was assigned at least one partition (and kept it for a moment)."""
    return "assigned [(" in log.read_text(errors="replace")


async def test_rebuild_recomputes_everything_from_the_topics(infra_env: dict[str, str]) -> None:
    messages = list(synthetic.stream(spec(600)))
    await synthetic.produce(infra_env["KAFKA_BOOTSTRAP_SERVERS"], messages)
    settings = FeatureSettings(**infra_env)
    assert await rebuild(settings) == len(messages)
    first = saved_states(infra_env["DATABASE_URL"])
    assert await rebuild(settings) == len(messages)  # again: the old state is forgotten, not added to
    assert saved_states(infra_env["DATABASE_URL"]) == first == replay(messages)
