"""analytics alone: how many events per second it applies from a backlog of pre-produced trades, lifecycle
events and predictions, on top of 10,000 and of 1,000,000 trades of prior history, and its memory.

    make bench-analytics        # or: uv run python -m bench.analytics --live 40000 --histories 10000 1000000

For each history size: fresh embedded Kafka, PostgreSQL and Redis; the prior history is generated inside
PostgreSQL into the tables a replay fills (bench/analytics_history.sql: trades, 1m/1h/1d buckets, positions,
participants, users, settlements, claimed event ids) — producing a million trades through the broker, or even
through analytics' own batch code (`--replay-history`), would take far longer than the run;
the live events are produced to Kafka; then the analytics service starts as its own process and the clock runs
from its first applied event until the last one is applied.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, cast

import psutil  # type: ignore[import-untyped]  # ships no type hints; no stubs in the lock
import psycopg
from aiokafka import AIOKafkaProducer
from tqdm import tqdm

from om_analytics.app import MIGRATIONS
from om_analytics.handlers import AnalyticsHandlers
from om_analytics.settings import AnalyticsSettings
from om_cli.embedded import Ports, free_port, start_infrastructure
from om_contracts import MarketCreated, MarketResolved, PredictionMade, TradeExecuted, encode
from om_runtime.db import Database, migrate

HISTORY_SQL = Path(__file__).with_name("analytics_history.sql")

NOW = datetime.now(UTC).replace(microsecond=0)
HISTORY_MARKETS, OPEN_MARKETS, USERS = 2_000, 200, 5_000
CATEGORIES = ("politics", "sports", "crypto", "tech", "weather")


def _trade(rng: random.Random, i: int, market: str, at: datetime, price: dict[str, float]) -> TradeExecuted:
    after = min(0.99, max(0.01, round(price.get(market, 0.5) + rng.uniform(-0.03, 0.03), 4)))
    before, price[market] = price.get(market, 0.5), after
    amount = round(rng.uniform(1, 100), 2)
    return TradeExecuted(
        occurred_at=at, producer="bench", trade_id=f"b{i}", market_id=market, user_id=f"u{rng.randrange(USERS)}",
        outcome=rng.choice(("YES", "NO")), side="BUY" if rng.random() < 0.8 else "SELL", amount=amount,
        shares=round(amount / max(after, 0.05), 2), price_before=before, price_after=after,
    )  # fmt: skip


def _created(market: str, at: datetime, i: int) -> MarketCreated:
    return MarketCreated(
        occurred_at=at, producer="bench", market_id=market, question="bench?", category=CATEGORIES[i % 5],
        close_at=at + timedelta(days=30),
    )  # fmt: skip


def history(trades: int, seed: int = 1) -> Iterator[list[Any]]:
    """Batches of prior events over the 30 days before the live phase: 2,000 markets (all but the 200 still
    open resolve on day 29), 5,000 users, `trades` trades in event-time order."""
    rng = random.Random(seed)
    start = NOW - timedelta(days=30)
    markets = [f"m{i}" for i in range(HISTORY_MARKETS)]
    price: dict[str, float] = {}
    yield [_created(m, start, i) for i, m in enumerate(markets)]
    step = (timedelta(days=29) / trades) if trades else timedelta(0)
    batch: list[Any] = []
    for i in range(trades):
        batch.append(_trade(rng, i, rng.choice(markets), start + step * i, price))
        if len(batch) == 5_000:
            yield batch
            batch = []
    if batch:
        yield batch
    end = start + timedelta(days=29)
    resolved = markets[OPEN_MARKETS:]
    for i in range(0, len(resolved), 100):
        outcomes: list[Literal["YES", "NO"]] = [rng.choice(("YES", "NO")) for _ in resolved[i : i + 100]]
        yield [
            MarketResolved(
                occurred_at=end,
                producer="bench",
                market_id=m,
                resolution=o,
                resolution_price=1.0 if o == "YES" else 0.0,
            )  # fmt: skip
            for m, o in zip(resolved[i : i + 100], outcomes, strict=True)
        ]


def live(n: int, seed: int = 2) -> dict[str, list[bytes]]:
    """The live backlog: trades on the open markets, 1 in 20 events a prediction, new markets and resolutions."""
    rng = random.Random(seed)
    start = NOW - timedelta(hours=2)
    open_markets = [f"m{i}" for i in range(OPEN_MARKETS)]
    price: dict[str, float] = {}
    out: dict[str, list[bytes]] = {"market.trades.v1": [], "prediction.predictions.v1": [], "market.lifecycle.v1": []}
    step = timedelta(hours=2) / n
    new_markets = [f"n{i}" for i in range(n // 1000)]
    out["market.lifecycle.v1"] += [encode(_created(m, start, i)) for i, m in enumerate(new_markets)]
    markets = open_markets + new_markets
    for i in range(n):
        at = start + step * i
        if i % 20 == 19:
            m = rng.choice(markets)
            p = round(rng.uniform(0.05, 0.95), 3)
            out["prediction.predictions.v1"].append(
                encode(
                    PredictionMade(
                        occurred_at=at,
                        producer="bench",
                        market_id=m,
                        probability=p,
                        confidence=max(p, 1 - p),
                        risk_level="medium",
                        model_version="bench",
                        features_as_of=at,
                    )
                )  # fmt: skip
            )
        else:
            out["market.trades.v1"].append(encode(_trade(rng, 10_000_000 + i, rng.choice(markets), at, price)))
    out["market.lifecycle.v1"] += [
        encode(MarketResolved(occurred_at=NOW, producer="bench", market_id=m, resolution="YES", resolution_price=1.0))
        for m in new_markets[: len(new_markets) // 2]
    ]
    return out


async def replay_history(database_url: str, trades: int) -> float:
    """Prior history through the code a replay runs (`AnalyticsHandlers.record`), in batches of 5,000."""
    settings = AnalyticsSettings.model_validate({"DATABASE_URL": database_url, "service_urls": {}})
    db = Database(database_url, schema="analytics", migrations=MIGRATIONS, pool_size=2)
    # writes only (`record`): nothing is published or cached, so no publisher and no hot models
    handlers = AnalyticsHandlers(db, publisher=cast(Any, None), hot=cast(Any, None), settings=settings)
    started = time.perf_counter()
    async with db:
        with tqdm(total=trades, desc=f"prior history ({trades:,} trades)", unit="trade", file=sys.stderr) as bar:
            for batch in history(trades):
                async with db.transaction() as conn:
                    await handlers.record(conn, batch)
                    # every trade straight into its hour and day too (`record`'s default): nothing to roll up
                    await conn.execute(
                        "UPDATE clock SET as_of = greatest(as_of, %s::timestamptz), rolled_through = "
                        "date_bin('1 hour', greatest(as_of, %s::timestamptz), '1970-01-01 00:00:00+00') "
                        "+ interval '1 hour'",
                        (batch[-1].occurred_at, batch[-1].occurred_at),
                    )
                bar.update(sum(1 for e in batch if isinstance(e, TradeExecuted)))
    return time.perf_counter() - started


def generate_history(database_url: str, trades: int) -> float:
    """Prior history generated inside PostgreSQL into the same tables (analytics_history.sql)."""
    started = time.perf_counter()
    migrate(database_url, "analytics", MIGRATIONS)
    statements = [s for s in HISTORY_SQL.read_text().split(";\n") if s.strip()]
    with psycopg.connect(database_url, options="-c search_path=analytics") as conn:
        for statement in tqdm(statements, desc=f"prior history ({trades:,} trades, in SQL)", file=sys.stderr):
            conn.execute(statement, {"trades": trades, "start": NOW - timedelta(days=30)})
    return time.perf_counter() - started


async def produce_backlog(bootstrap: str, backlog: dict[str, list[bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=256 * 1024)
    await producer.start()
    try:
        pending = []
        for topic, values in backlog.items():
            for value in values:
                key = value.split(b'"market_id":"', 1)[1].split(b'"', 1)[0]
                pending.append(await producer.send(topic, value, key=key))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def applied(conn: psycopg.Connection, topics: list[str]) -> int:
    """Live events applied so far: the broker held only the live backlog, so the offsets analytics committed with
    its effects (the runtime's `consumer_offsets`, one row per partition) add up to the events it applied."""
    try:
        row = conn.execute(
            "SELECT coalesce(sum(next_offset), 0) FROM analytics.consumer_offsets WHERE topic = ANY(%s)", (topics,)
        ).fetchone()
    except psycopg.errors.UndefinedTable:  # the service has not created its schema yet
        return 0
    return int(row[0]) if row else 0


def pending_snapshots(conn: psycopg.Connection) -> int:
    """Markets and users flagged for a snapshot not yet recomputed."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM analytics.markets WHERE dirty) "
        "+ (SELECT count(*) FROM analytics.users WHERE dirty)"
    ).fetchone()
    return int(row[0]) if row else 0


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s(process: psutil.Process, *, children: bool = False) -> float:
    """User + system CPU-seconds of a process (and of its live children: PostgreSQL's backends)."""
    procs = [process, *(process.children(recursive=True) if children else [])]
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


# uvicorn re-raises the SIGTERM it caught after a graceful shutdown: the handler it restores writes the profile.
_PROFILED = """
import cProfile, signal, sys
from om_analytics.__main__ import main
profiler = cProfile.Profile()
def stop(*_):
    profiler.disable()
    profiler.dump_stats({path!r})
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
profiler.enable()
main()
"""


def run_once(prior: int, n_live: int, data: Path, replay: bool, profile: Path | None = None) -> dict[str, float]:
    infra = start_infrastructure(data, Ports(free_port(), free_port(), free_port()), environ={})
    process = None
    try:
        env = infra.env()
        if replay:
            history_s = asyncio.run(replay_history(env["DATABASE_URL"], prior))
        else:
            history_s = generate_history(env["DATABASE_URL"], prior)
        backlog = live(n_live)
        total = sum(len(v) for v in backlog.values())
        asyncio.run(produce_backlog(env["KAFKA_BOOTSTRAP_SERVERS"], backlog))
        port = free_port()
        service_env = {
            **os.environ, **env, "ANALYTICS_HTTP_PORT": str(port), "ANALYTICS_SERVICE_URLS": "{}",
            "ANALYTICS_REDIS_PREFIX": f"bench{uuid.uuid4().hex[:6]}", "OTEL_TRACES_EXPORTER": "none",
            "ANALYTICS_LOG_LEVEL": "WARNING",
        }  # fmt: skip
        with open(data / "analytics.log", "ab") as log:
            command = ["-c", _PROFILED.format(path=str(profile))] if profile else ["-m", "om_analytics"]
            process = subprocess.Popen(
                [sys.executable, *command], env=service_env, stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        first = last = None
        base = 0
        service = psutil.Process(process.pid)
        postgres = [psutil.Process(s.process.pid) for s in infra.started if s.name == "postgres" and s.process]
        cpu_first = (0.0, 0.0)
        peak = 0.0
        with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn, tqdm(
            total=total, desc="live backlog", unit="event", file=sys.stderr
        ) as bar:  # fmt: skip
            deadline = time.monotonic() + 1800
            while time.monotonic() < deadline:
                done = applied(conn, list(backlog))
                now = time.monotonic()
                if done > base and first is None:
                    first, base = now, done  # the first batch: the clock starts when it is applied
                    cpu_first = (cpu_s(service), sum(cpu_s(p, children=True) for p in postgres))
                bar.n = done
                bar.refresh()
                peak = max(peak, rss_mib(process.pid))
                if done >= total:
                    last = now
                    cpu_last = (cpu_s(service), sum(cpu_s(p, children=True) for p in postgres))
                    break
                if process.poll() is not None:
                    raise RuntimeError(f"analytics exited early: {(data / 'analytics.log').read_text()[-3000:]}")
                time.sleep(0.05)
        if first is None or last is None:
            raise RuntimeError("the backlog was not applied within 30 minutes")
        rss = rss_mib(process.pid)
        # Snapshots trail the batches (they are recomputed in rounds): also time until none is left to recompute,
        # and count the CPU spent until then.
        with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
            while pending_snapshots(conn) and time.monotonic() < deadline:
                time.sleep(0.05)
        settled = time.monotonic()
        cpu_settled = (cpu_s(service), sum(cpu_s(p, children=True) for p in postgres))
        return {
            "prior": prior, "events": total, "history_s": history_s,
            "events_per_s": (total - base) / max(last - first, 1e-9), "seconds": last - first,
            "rss_mib": rss, "peak_rss_mib": max(peak, rss_mib(process.pid, "VmHWM")),
            "cpu_per_1k": (cpu_last[0] - cpu_first[0]) / max(total - base, 1) * 1000,
            "pg_cpu_per_1k": (cpu_last[1] - cpu_first[1]) / max(total - base, 1) * 1000,
            "snapshots_after_s": settled - last,
            "settled_cpu_per_1k": (cpu_settled[0] - cpu_first[0]) / max(total - base, 1) * 1000,
            "settled_pg_cpu_per_1k": (cpu_settled[1] - cpu_first[1]) / max(total - base, 1) * 1000,
        }  # fmt: skip
    finally:
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(60 if profile else 15)  # cProfile writes its file at exit
            except subprocess.TimeoutExpired:
                process.kill()
        infra.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--live", type=int, default=40_000, help="live events to apply (default 40,000)")
    parser.add_argument("--histories", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument(
        "--replay-history", action="store_true", help="write the history through analytics' own code (slow)"
    )
    parser.add_argument(
        "--profile", type=Path, help="run the service under cProfile, writing PATH.<history> (pstats files)"
    )
    args = parser.parse_args()
    results = []
    for prior in args.histories:
        profile = args.profile.with_name(f"{args.profile.name}.{prior}").absolute() if args.profile else None
        with tempfile.TemporaryDirectory() as data:
            results.append(run_once(prior, args.live, Path(data), args.replay_history, profile))
    print(f"\nanalytics alone, {args.live:,} live events (trades, predictions 1 in 20, market creations and "
          f"resolutions), 2 cores shared\n")  # fmt: skip
    for r in results:
        print(
            f"  prior history {r['prior']:>9,} trades: {r['events_per_s']:8,.0f} events/s "
            f"({r['events']:,} events in {r['seconds']:.1f} s)   RSS {r['rss_mib']:.0f} MiB "
            f"(peak {r['peak_rss_mib']:.0f})   history built in {r['history_s']:.0f} s\n"
            f"      CPU-s per 1,000 events: analytics {r['cpu_per_1k']:.3f}, PostgreSQL {r['pg_cpu_per_1k']:.3f}; "
            f"with the trailing snapshots (all current {r['snapshots_after_s']:.1f} s later): "
            f"{r['settled_cpu_per_1k']:.3f} and {r['settled_pg_cpu_per_1k']:.3f}"
        )
    if len(results) >= 2:
        a, b = results[0]["events_per_s"], results[-1]["events_per_s"]
        print(f"  largest vs smallest history: {(b - a) / a * 100:+.1f} % events/s (goal: within 20 %)")
    print("  goal: >= 20,000 events/s")


if __name__ == "__main__":
    main()
