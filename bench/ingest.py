"""How fast ingest records trades: through batch HTTP (`POST /v1/trades/batch`) and through the raw topic
(`ingest.raw-trades.v1`). Starts embedded Kafka and PostgreSQL and ingest as its own process, prints figures.

    make bench-ingest                                   # or: uv run python -m bench.ingest --http-trades 50000
    uv run python -m bench.ingest --raw-trades 200000 --json out.json

Goals on the project's 2-core machine: batch HTTP ≥ 5,000 trades/s, raw topic ≥ 20,000 trades/s. "Recorded" means
committed in PostgreSQL with their events in the outbox; "published" means the outbox relay also had Kafka confirm
every event (none is left unpublished in the outbox).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess  # nosec B404  # starts ingest, our own module, with a fixed argument list
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]  # ships no type hints; no stubs in the lock
import psycopg
from aiokafka import AIOKafkaProducer

from om_cli.embedded import EmbeddedKafka, EmbeddedPostgres, free_port

# ingest under cProfile: uvicorn re-raises SIGTERM after its graceful shutdown; exiting on it instead lets cProfile
# write the profile.
PROFILED = """
import cProfile, runpy, signal, sys
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
cProfile.run("runpy.run_module('om_ingest', run_name='__main__')", {out!r})
"""


def market_ids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{i:04d}" for i in range(count)]


def trade(market: str, trade_id: str, i: int) -> dict[str, Any]:
    return {
        "trade_id": trade_id,
        "market_id": market,
        "user_id": f"u{i % 997}",
        "outcome": "YES" if i % 3 else "NO",
        "amount": 10.0 + i % 7,
        "shares": 20.0,
        "price": 0.3 + (i % 40) / 100,
    }


class Ingest:
    """ingest as its own process, as in production; stopped by its PID."""

    def __init__(self, env: dict[str, str], log: Path, profile: Path | None = None) -> None:
        self.port = free_port()
        self.profile = profile
        self.env = {**os.environ, **env, "INGEST_HTTP_PORT": str(self.port), "INGEST_LOG_LEVEL": "WARNING"}
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def spawn(self) -> None:
        with open(self.log, "ab") as out:
            command = [sys.executable, "-c", PROFILED.format(out=str(self.profile))] if self.profile else []
            command = command or [sys.executable, "-m", "om_ingest"]
            # bandit: a fixed argument list (this interpreter, our module or profiling wrapper); no shell
            self.process = subprocess.Popen(command, env=self.env, stdout=out, stderr=out)  # noqa: S603  # nosec B603

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the ingest process has used so far."""
        if self.process is None:
            raise RuntimeError("start() ingest first")
        times = psutil.Process(self.process.pid).cpu_times()
        return float(times.user + times.system)

    async def start(self) -> None:
        self.spawn()
        async with httpx.AsyncClient() as http:
            for _ in range(600):
                try:
                    if (await http.get(f"{self.url}/ready")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"ingest did not become ready; see {self.log}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def servers_cpu_s(servers: Sequence[EmbeddedKafka | EmbeddedPostgres]) -> dict[str, float]:
    """CPU seconds each embedded server has used so far, its child processes (PostgreSQL's backends) included."""
    out: dict[str, float] = {}
    for server in servers:
        if server.process is None:
            continue
        proc = psutil.Process(server.process.pid)
        t = proc.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system  # children it has reaped
        for child in proc.children(recursive=True):
            try:
                c = child.cpu_times()
            except psutil.Error:
                continue
            total += c.user + c.system
        out[server.name] = total
    return out


def _per_1000(before: dict[str, float], after: dict[str, float], n: int) -> dict[str, float]:
    return {f"{name}_cpu_s_per_1000": round((after[name] - before.get(name, 0.0)) / n * 1000, 3) for name in after}


_probes: dict[str, psycopg.Connection[Any]] = {}


def _scalar(database_url: str, query: str) -> int:
    # One kept connection per database: the waits poll every 50 ms, and a connection per poll (a PostgreSQL backend
    # forked each time) was part of the CPU the benchmark charged to PostgreSQL per trade.
    conn = _probes.get(database_url)
    if conn is None or conn.closed:
        conn = _probes[database_url] = psycopg.connect(database_url, autocommit=True)
    row = conn.execute(query.encode()).fetchone()
    return int(row[0]) if row else 0


def close_probes() -> None:
    for conn in _probes.values():
        conn.close()
    _probes.clear()


def raw_consumed(database_url: str) -> int:
    """Raw-trade records ingest has recorded (or dead-lettered): the offsets it saved with them. Cheaper to poll
    than counting a table that grows by every trade (an index scan of it per poll)."""
    return _scalar(
        database_url,
        "SELECT coalesce(sum(next_offset), 0) FROM ingest.consumer_offsets WHERE topic = 'ingest.raw-trades.v1'",
    )


def count(database_url: str, table: str) -> int:
    # bandit: `table` is one of this module's fixed table names, never input
    return _scalar(database_url, f"SELECT count(*) FROM ingest.{table}")  # noqa: S608  # nosec B608


def unpublished(database_url: str) -> int:
    """Outbox events not published yet (published ones stay for the retention window)."""
    return _scalar(database_url, "SELECT count(*) FROM ingest.outbox WHERE published_at IS NULL")


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 600.0, interval_s: float = 0.05) -> float:
    deadline = time.perf_counter() + timeout_s
    while not predicate():
        if time.perf_counter() > deadline:
            raise TimeoutError("gave up waiting")
        await asyncio.sleep(interval_s)
    return time.perf_counter()


async def create_markets(url: str, markets: list[str]) -> None:
    close_at = (datetime.now(UTC) + timedelta(days=7)).isoformat()
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        for m in markets:
            (
                await http.post("/v1/markets", json={"market_id": m, "question": "bench?", "close_at": close_at})
            ).raise_for_status()


async def bench_http(
    ingest: Ingest,
    database_url: str,
    total: int,
    batch: int,
    clients: int,
    servers: Sequence[EmbeddedKafka | EmbeddedPostgres] = (),
) -> dict[str, Any]:
    """`clients` concurrent clients, each posting batches of `batch` trades over its own 25 markets."""
    markets = market_ids("http", clients * 25)
    await create_markets(ingest.url, markets)
    per_client = total // clients
    print(f"batch HTTP: {per_client * clients} trades from {clients} clients ...", flush=True)

    async def client(c: int) -> None:
        mine = markets[c * 25 : (c + 1) * 25]
        async with httpx.AsyncClient(base_url=ingest.url, timeout=120) as http:
            for start in range(0, per_client, batch):
                trades = [trade(mine[i % 25], f"h{c}-{i}", i) for i in range(start, min(start + batch, per_client))]
                (await http.post("/v1/trades/batch", json={"trades": trades})).raise_for_status()

    started, cpu, servers_before = time.perf_counter(), ingest.cpu_s(), servers_cpu_s(servers)
    await asyncio.gather(*(client(c) for c in range(clients)))
    recorded = time.perf_counter()
    published = await wait_until(lambda: unpublished(database_url) == 0)
    n = per_client * clients
    return {
        **_per_1000(servers_before, servers_cpu_s(servers), n),
        "trades": n,
        "batch": batch,
        "clients": clients,
        "recorded_per_s": round(n / (recorded - started)),
        "published_per_s": round(n / (published - started)),
        "ingest_cpu_s_per_1000": round((ingest.cpu_s() - cpu) / n * 1000, 3),
    }


async def bench_raw(
    kafka: str,
    ingest: Ingest,
    database_url: str,
    total: int,
    already: int,
    servers: Sequence[EmbeddedKafka | EmbeddedPostgres] = (),
) -> dict[str, Any]:
    """Produce `total` raw trades as fast as possible while ingest runs; time until all are recorded."""
    markets = market_ids("raw", 200)
    await create_markets(ingest.url, markets)
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka, enable_idempotence=False, linger_ms=5, max_batch_size=256 * 1024
    )
    await producer.start()
    print(f"raw topic: producing {total} trades ...", flush=True)
    consumed_before = raw_consumed(database_url)
    started, cpu, servers_before = time.perf_counter(), ingest.cpu_s(), servers_cpu_s(servers)
    try:
        for start in range(0, total, 5000):
            sends = []
            for i in range(start, min(start + 5000, total)):
                m = markets[i % len(markets)]
                value = json.dumps(trade(m, f"r-{i}", i)).encode()
                sends.append(await producer.send("ingest.raw-trades.v1", value, key=m.encode()))
            await asyncio.gather(*sends)
    finally:
        await producer.stop()
    produced = time.perf_counter()
    recorded = await wait_until(lambda: raw_consumed(database_url) >= consumed_before + total)
    published = await wait_until(lambda: unpublished(database_url) == 0)
    return {
        **_per_1000(servers_before, servers_cpu_s(servers), total),
        "trades": total,
        "produce_per_s": round(total / (produced - started)),
        "recorded_per_s": round(total / (recorded - started)),
        "published_per_s": round(total / (published - started)),
        "ingest_cpu_s_per_1000": round((ingest.cpu_s() - cpu) / total * 1000, 3),
    }


async def raw_topic_only(raw_trades: int) -> dict[str, Any]:
    """The raw-topic figure alone, on fresh embedded Kafka and PostgreSQL (the end-to-end benchmark uses it)."""
    data = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    kafka = EmbeddedKafka("kafka", free_port(), data / "kafka")
    postgres = EmbeddedPostgres("postgres", free_port(), data / "postgres")
    ingest: Ingest | None = None
    try:
        kafka.start()
        postgres.start()
        env = {"KAFKA_BOOTSTRAP_SERVERS": kafka.url, "DATABASE_URL": postgres.url, "DATABASE_POOL_SIZE": "8"}
        ingest = Ingest(env, data / "ingest.log")
        await ingest.start()
        return await bench_raw(
            kafka.url, ingest, postgres.url, raw_trades, count(postgres.url, "trades"), [kafka, postgres]
        )
    finally:
        if ingest:
            ingest.stop()
        close_probes()
        postgres.stop()
        kafka.stop()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    kafka = EmbeddedKafka("kafka", free_port(), data / "kafka")
    postgres = EmbeddedPostgres("postgres", free_port(), data / "postgres")
    ingest: Ingest | None = None
    try:
        kafka.start()
        postgres.start()
        env = {"KAFKA_BOOTSTRAP_SERVERS": kafka.url, "DATABASE_URL": postgres.url, "DATABASE_POOL_SIZE": "8"}
        ingest = Ingest(env, data / "ingest.log", args.profile)
        await ingest.start()
        servers: list[EmbeddedKafka | EmbeddedPostgres] = [kafka, postgres]
        http = await bench_http(ingest, postgres.url, args.http_trades, args.batch, args.clients, servers)
        already = count(postgres.url, "trades")
        raw = await bench_raw(kafka.url, ingest, postgres.url, args.raw_trades, already, servers)
    finally:
        if ingest:
            ingest.stop()
        close_probes()
        postgres.stop()
        kafka.stop()
    return {"machine": f"{os.cpu_count()} CPUs (shared with other work)", "batch_http": http, "raw_topic": raw}


def main(argv: list[str] | None = None) -> None:
    """`python -m bench.ingest [args]`, or `python -m bench ingest [args]` (bench/__main__.py calls `main(argv)`)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--http-trades", type=int, default=40_000)
    parser.add_argument("--batch", type=int, default=1000, help="trades per HTTP batch (1 to 1000)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients")
    parser.add_argument("--raw-trades", type=int, default=100_000)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--profile", type=Path, help="run ingest under cProfile and write its profile here")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    h, r = result["batch_http"], result["raw_topic"]
    print(f"ingest benchmark ({result['machine']})")
    print(
        "| path | trades | recorded trades/s | published trades/s | CPU-s per 1,000: ingest | kafka | postgres | goal |"
    )
    print("|---|---|---|---|---|---|---|---|")
    http_path = f"batch HTTP ({h['clients']} clients x {h['batch']}/batch)"
    raw_path = f"raw topic (produced at {r['produce_per_s']}/s)"
    for path, figures, goal in ((http_path, h, "5,000"), (raw_path, r, "20,000")):
        keys = ["trades", "recorded_per_s", "published_per_s", "ingest_cpu_s_per_1000"]
        keys += ["kafka_cpu_s_per_1000", "postgres_cpu_s_per_1000"]
        cells = [figures[k] for k in keys]
        print(f"| {path} | " + " | ".join(str(c) for c in cells) + f" | {goal} |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
