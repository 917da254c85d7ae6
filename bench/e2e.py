"""The end-to-end benchmark: the ceiling (a raw aiokafka consume -> produce relay on the same broker), sustained
trades/s through every consumer at stepped rates (fresh servers per step: the embedded broker keeps everything in
memory; steps stop at the first that fails), trade -> WebSocket latency (and its hops) under 1,000 trades/s of
background load, ingest through batch HTTP and through the raw topic, and per service events/s, RSS and
CPU-seconds per 1,000 trades. Prints a markdown table and writes JSON + markdown to `.om/bench/`.

A step passes when, at its end, the backlog (trades sent that analytics has not counted yet, and the feature and
prediction consumers' lag) is at most one second of input.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import prometheus_client
import psutil  # type: ignore[import-untyped]  # ships no type hints; no stubs in the lock
import websockets
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from tqdm import tqdm

from bench.ingest import raw_topic_only
from om_cli.api_client import api_client
from om_cli.credentials import auth_headers
from om_cli.embedded import Infrastructure, Ports, free_port, start_infrastructure
from om_cli.launcher import consumer_lag
from om_cli.platform import Platform, ServicePorts
from om_runtime.loopwatch import LoopWatch, LoopWatchSettings

OUT_DIR = Path(os.environ.get("OM_BENCH_DIR", ".om/bench"))
CONSUMERS = ("feature", "prediction", "analytics")
IDLE_SECONDS = 5.0  # the idle platform's CPU is measured this long before each step


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def trade(run: str, i: int, markets: int, users: int) -> dict[str, Any]:
    return {
        "trade_id": f"{run}-{i}",
        "market_id": f"{run}-m{i % markets}",
        "user_id": f"{run}-u{i % users}",
        "outcome": "YES" if i % 3 else "NO",
        "amount": float(1 + i % 7),
        "shares": float(2 + i % 5),
        "price": round(0.3 + (i % 40) / 100, 2),
    }


@contextlib.contextmanager
def platform_up() -> Iterator[Platform]:
    """Fresh embedded servers and the five services, stopped again afterwards."""
    with infra_and_platform() as (platform, _):
        yield platform


@contextlib.contextmanager
def infra_and_platform() -> Iterator[tuple[Platform, Infrastructure]]:
    """`platform_up`, with the embedded servers too (to read the broker's and PostgreSQL's CPU)."""
    with tempfile.TemporaryDirectory() as data:
        infra = start_infrastructure(Path(data), Ports(free_port(), free_port(), free_port()), environ={})
        platform = Platform(infra.env(), Path(data) / "logs", ServicePorts(*(free_port() for _ in range(5))))
        try:
            platform.start(timeout_s=120)
            yield platform, infra
        finally:
            platform.stop()
            infra.stop()
            if keep := os.environ.get("OM_BENCH_LOGS"):  # the services' logs (stall warnings) outlive the run
                shutil.copytree(Path(data) / "logs", Path(keep), dirs_exist_ok=True)


# --- the ceiling ----------------------------------------------------------------------------------------------


async def ceiling(bootstrap: str, messages: int) -> float:
    """Messages/s a bare aiokafka consumer -> producer relay moves between two topics (no decoding, no DB)."""
    source, sink = f"bench-src-{uuid.uuid4().hex[:6]}", f"bench-dst-{uuid.uuid4().hex[:6]}"
    payload = json.dumps(trade("ceiling", 0, 1, 1) | {"pad": "x" * 700}).encode()  # ~0.9 KB, like an event
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, linger_ms=5)
    await producer.start()
    try:
        for i in range(messages):
            await producer.send(source, payload, key=str(i % 64).encode())
        await producer.flush()
        consumer = AIOKafkaConsumer(
            source,
            bootstrap_servers=bootstrap,
            group_id="bench-relay",
            auto_offset_reset="earliest",
            fetch_max_wait_ms=10,
            max_poll_records=2000,
        )
        await consumer.start()
        try:
            moved, started = 0, None
            while moved < messages:
                batch = await consumer.getmany(timeout_ms=500, max_records=2000)
                if started is None and batch:
                    started = time.perf_counter()
                for records in batch.values():
                    for r in records:
                        await producer.send(sink, r.value, key=r.key)
                    moved += len(records)
            await producer.flush()
            return messages / (time.perf_counter() - (started or time.perf_counter()))
        finally:
            await consumer.stop()
    finally:
        await producer.stop()


# --- load and observation ---------------------------------------------------------------------------------------


async def create_markets(ingest: Any, run: str, markets: int) -> None:
    close_at = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    for m in range(markets):
        body = {"market_id": f"{run}-m{m}", "question": "bench?", "category": "bench", "close_at": close_at}
        (await ingest.post("/v1/markets", json=body)).raise_for_status()


async def offer(
    ingest: Any,
    run: str,
    rate: float,
    seconds: float,
    *,
    markets: int,
    users: int,
    batch: int = 250,
    senders: int = 4,
    first: int = 0,
) -> int:
    """Send trades through ingest's batch API at `rate` for `seconds` (as far as it keeps up); return how many."""
    total = int(rate * seconds)
    started = time.monotonic()
    next_index = first
    lock = asyncio.Lock()

    async def sender() -> None:
        nonlocal next_index
        while True:
            async with lock:
                begin = next_index
                if begin >= first + total:
                    return
                next_index = end = min(first + total, begin + batch)
            await asyncio.sleep(max(0.0, started + (begin - first) / rate - time.monotonic()))
            body = {"trades": [trade(run, i, markets, users) for i in range(begin, end)]}
            (await ingest.post("/v1/trades/batch", json=body)).raise_for_status()

    await asyncio.gather(*(sender() for _ in range(senders)))
    return total


async def scrape(http: Any, platform: Platform) -> dict[str, dict[str, float]]:
    """Per service: events applied so far (om_consumer_events_total), lag, CPU seconds and RSS."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, dict[str, float]] = {}
    for service in platform.running:
        text = (await http.get(f"{service.url}/metrics")).text
        events = sum(
            s.value
            for f in text_string_to_metric_families(text)
            if f.name == "om_consumer_events"
            for s in f.samples
            if s.name.endswith("_total")
        )
        proc = psutil.Process(service.process.pid)
        cpu = proc.cpu_times()
        out[service.name] = {
            "events": events,
            "lag": float(consumer_lag(text) or 0),
            "cpu_s": cpu.user + cpu.system,
            "rss_mib": proc.memory_info().rss / 2**20,
        }
    return out


def server_cpu_s(infra: Infrastructure) -> dict[str, float]:
    """CPU seconds each embedded server (kafka, postgres, redis) has used so far, its child processes included:
    PostgreSQL's work happens in one backend per connection, and those it has reaped count in its children's
    times."""
    out: dict[str, float] = {}
    for server in infra.started:
        if server.process is None:
            continue
        proc = psutil.Process(server.process.pid)
        t = proc.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        for child in proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                c = child.cpu_times()
                total += c.user + c.system
        out[server.name] = total
    return out


def postgres_backends(infra: Infrastructure, platform: Platform) -> dict[int, tuple[str, float]]:
    """PostgreSQL's processes: pid -> (who it works for, CPU seconds so far). A backend is attributed to the service
    holding its client's TCP port; the rest (autovacuum, WAL writer, checkpointer, the benchmark's own connections)
    is "other"."""
    server = next((s for s in infra.started if s.name == "postgres"), None)
    if server is None or server.process is None:
        return {}
    ports: dict[int, str] = {}
    for service in platform.running:
        with contextlib.suppress(psutil.Error):
            for conn in psutil.Process(service.process.pid).net_connections(kind="tcp"):
                if conn.raddr and conn.raddr.port == int(infra.database_url.rsplit(":", 1)[1].split("/")[0]):
                    ports[conn.laddr.port] = service.name
    out: dict[int, tuple[str, float]] = {}
    for child in psutil.Process(server.process.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            cmdline = " ".join(child.cmdline())
            owner = "other"
            if "127.0.0.1(" in cmdline:
                owner = ports.get(int(cmdline.split("127.0.0.1(", 1)[1].split(")", 1)[0]), "other")
            t = child.cpu_times()
            out[child.pid] = (owner, t.user + t.system)
    return out


def postgres_by_service(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds PostgreSQL spent for each service between two `postgres_backends` snapshots."""
    out: dict[str, float] = {}
    for pid, (owner, cpu) in after.items():
        out[owner] = out.get(owner, 0.0) + cpu - before.get(pid, (owner, 0.0))[1]
    return out


def loop_lag(text: str) -> dict[str, float]:
    """A service's event-loop lag (`om_event_loop_lag_seconds`, see om_runtime.loopwatch): wake-ups, the share
    later than 50 ms, stalls over the warning threshold and the p99 as its histogram bucket's upper bound."""
    from prometheus_client.parser import text_string_to_metric_families

    buckets: dict[float, float] = {}
    stalls = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "om_event_loop_lag_seconds_bucket":
                buckets[float(s.labels["le"])] = s.value
            elif s.name == "om_event_loop_stalls_total":
                stalls = s.value
    count = buckets.get(float("inf"), 0.0)
    if not count:
        return {"wakeups": 0.0}
    p99 = next((le for le in sorted(buckets) if buckets[le] >= 0.99 * count), float("inf"))
    return {
        "wakeups": count,
        "late_over_50ms": count - buckets.get(0.05, 0.0),
        "stalls": stalls,
        "p99_le_ms": p99 * 1000,
    }


async def analytics_trades(http: Any, platform: Platform) -> int:
    body = (await http.get(platform.url("analytics") + "/v1/system/metrics")).json()
    return int(body["system_metrics"]["total_trades_24h"])


@dataclass
class Step:
    rate: float
    seconds: float
    sent: int = 0
    achieved_rate: float = 0.0
    backlog_trades: float = 0.0
    passed: bool = False
    #: What is left at the step's end, per consumer (the largest is the step's backlog, which fails it).
    backlog: dict[str, float] = field(default_factory=dict)
    cpu_s_per_1000_total: float = 0.0
    cpu_bound_trades_per_s: float = 0.0
    #: Cores each process used with the platform up and no load (before the step), and what grows with the rate.
    idle_cores: dict[str, float] = field(default_factory=dict)
    cpu_s_per_1000_marginal: float = 0.0
    #: PostgreSQL's CPU-s per 1,000 trades by the service its backends served ("other": its own background work).
    postgres_cpu_s_per_1000_by_service: dict[str, float] = field(default_factory=dict)
    cpu_bound_marginal_trades_per_s: float = 0.0
    per_service: dict[str, dict[str, float]] = field(default_factory=dict)


async def sustained_step(rate: float, seconds: float, markets: int, users: int) -> Step:
    step = Step(rate, seconds)
    with infra_and_platform() as (platform, infra):
        # the gateway's /metrics wants a credential; the other services ignore it
        http = api_client("http://127.0.0.1", timeout=60, headers=auth_headers(platform.admin_api_key))
        ingest = api_client(platform.url("ingest"), timeout=60)
        async with http, ingest:
            run = f"s{int(rate)}"
            await create_markets(ingest, run, markets)
            # The platform's idle CPU first (polling, probes, timers), to tell the fixed cost from the per-trade one.
            await asyncio.sleep(2.0)
            idle_from, servers_idle_from, idle_started = (
                await scrape(http, platform),
                server_cpu_s(infra),
                time.monotonic(),
            )
            await asyncio.sleep(IDLE_SECONDS)
            before = await scrape(http, platform)
            servers_before = server_cpu_s(infra)
            backends_before = postgres_backends(infra, platform)
            idle_s = time.monotonic() - idle_started
            idle_cores = {n: (before[n]["cpu_s"] - idle_from[n]["cpu_s"]) / idle_s for n in before} | {
                n: (servers_before[n] - servers_idle_from.get(n, 0.0)) / idle_s for n in servers_before
            }
            started = time.monotonic()
            step.sent = await offer(ingest, run, rate, seconds, markets=markets, users=users)
            elapsed = time.monotonic() - started
            step.achieved_rate = step.sent / elapsed
            after = await scrape(http, platform)
            servers_after = server_cpu_s(infra)
            step.postgres_cpu_s_per_1000_by_service = {
                name: cpu / max(1, step.sent) * 1000
                for name, cpu in postgres_by_service(backends_before, postgres_backends(infra, platform)).items()
            }
            counted = await analytics_trades(http, platform)
            step.backlog = {
                "analytics_uncounted": float(step.sent - counted),
                **{f"{name}_lag": after[name]["lag"] for name in CONSUMERS},
            }
            step.backlog_trades = max(step.backlog.values())
            # passes when the input rate was really offered and the backlog is at most one second of it
            step.passed = step.achieved_rate >= 0.95 * rate and step.backlog_trades <= rate
            for name, a in after.items():
                b = before[name]
                step.per_service[name] = {
                    "events_per_s": (a["events"] - b["events"]) / elapsed,
                    "cpu_s_per_1000_trades": (a["cpu_s"] - b["cpu_s"]) / max(1, step.sent) * 1000,
                    "rss_mib": a["rss_mib"],
                }
            for name, cpu in servers_after.items():
                step.per_service[name] = {
                    "events_per_s": 0.0,
                    "cpu_s_per_1000_trades": (cpu - servers_before.get(name, 0.0)) / max(1, step.sent) * 1000,
                    "rss_mib": 0.0,
                }
            # Every process's CPU per trade, summed: on this machine's cores, the rate the CPU alone allows. Part of
            # it is spent whatever the rate (idle polling and timers: `idle_cores`); the rest grows with the rate, so
            # the bound is what the idle platform leaves of the cores over the per-trade rest.
            cores = os.cpu_count() or 1
            step.cpu_s_per_1000_total = sum(c["cpu_s_per_1000_trades"] for c in step.per_service.values())
            step.cpu_bound_trades_per_s = cores / max(1e-9, step.cpu_s_per_1000_total / 1000)
            step.idle_cores = idle_cores
            idle_total = sum(idle_cores.values())
            per_trade_s = max(1e-9, (step.cpu_s_per_1000_total / 1000) - idle_total * elapsed / max(1, step.sent))
            step.cpu_s_per_1000_marginal = per_trade_s * 1000
            step.cpu_bound_marginal_trades_per_s = max(0.0, cores - idle_total) / per_trade_s
    return step


class HopClock:
    """Records when the latency market's events reach Kafka (the records' producer timestamps): each trade on
    market.trades.v1 and each analytics snapshot on analytics.market.v1, to split trade -> WebSocket into hops."""

    def __init__(self, bootstrap: str, market: str) -> None:
        self.market = market
        self.trade_ms: dict[str, int] = {}  # trade_id -> record timestamp
        self.snapshots: list[tuple[int, int]] = []  # (trade_count, record timestamp), in arrival order
        self.consumer = AIOKafkaConsumer(
            "market.trades.v1",
            "analytics.market.v1",
            bootstrap_servers=bootstrap,
            auto_offset_reset="latest",
            fetch_max_wait_ms=5,
        )

    async def run(self) -> None:
        while True:
            batch = await self.consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for r in records:
                    if r.key != self.market.encode():
                        continue
                    body = json.loads(r.value)
                    if r.topic == "market.trades.v1":
                        self.trade_ms[body["trade_id"]] = r.timestamp
                    else:
                        self.snapshots.append((body["trade_count"], r.timestamp))

    def snapshot_ms(self, trade_count: int) -> int | None:
        return next((ts for count, ts in self.snapshots if count >= trade_count), None)


def hop_summary(hops: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    return {
        name: {
            "samples": len(v),
            "p50_ms": percentile(v, 0.5),
            "p95_ms": percentile(v, 0.95),
            "p99_ms": percentile(v, 0.99),
        }
        for name, v in hops.items()
    }


async def update_arrives(ws: Any, trade_count: int, deadline: float) -> bool:
    """Wait for the market_update that counts `trade_count` trades; False once `deadline` (monotonic) passed.
    Pings while it waits: the gateway closes a client silent for two minutes."""
    while (left := deadline - time.monotonic()) > 0:
        try:
            message = json.loads(await asyncio.wait_for(ws.recv(), min(20.0, left)))
        except TimeoutError:
            await ws.send(json.dumps({"type": "ping"}))
            continue
        if message.get("type") == "market_update" and message["market"]["trade_count"] >= trade_count:
            return True
    return False


async def latency_under_load(
    samples: int, background_rate: float, markets: int, users: int, max_seconds: float = 90.0
) -> dict[str, Any]:
    """Seconds from POST /trades (gateway) to the market_update it causes, while background trades flow; split
    into hops by the Kafka records' timestamps: the write (POST answered), the outbox relay (answered -> on
    market.trades.v1), analytics (-> its snapshot on analytics.market.v1) and the gateway (-> on the WebSocket)."""
    with platform_up() as platform:
        gateway = platform.url("gateway")
        api = api_client(gateway + "/api/v1", timeout=30, headers=auth_headers(platform.admin_api_key))
        ingest = api_client(platform.url("ingest"), timeout=60)
        ws_url = (
            gateway.replace("http", "ws", 1) + f"/api/v1/ai-analytics/ws/analytics/bench?token={platform.admin_api_key}"
        )
        market = "lat-m0"
        # The bench's own loop: a stall here (its senders, its side consumer) would show as a slow gateway hop.
        bench_registry = prometheus_client.CollectorRegistry()
        bench_watch = LoopWatch(bench_registry, "bench", LoopWatchSettings(stall_s=0.1))
        bench_probe = asyncio.create_task(bench_watch.run())
        clock = HopClock(platform.infra_env["KAFKA_BOOTSTRAP_SERVERS"], market)
        await clock.consumer.start()
        watcher = asyncio.create_task(clock.run())
        async with api, ingest, websockets.connect(ws_url, max_size=None) as ws:
            await create_markets(ingest, "bg", markets)
            await create_markets(ingest, "lat", 1)
            await ws.send(json.dumps({"type": "subscribe", "market_ids": [market]}))
            background = asyncio.create_task(offer(ingest, "bg", background_rate, 3600, markets=markets, users=users))
            await asyncio.sleep(3.0)  # let the background load settle in
            results: list[float] = []
            timed_out = 0
            hops: dict[str, list[float]] = {"write": [], "relay": [], "analytics": [], "gateway": []}
            deadline = time.monotonic() + max_seconds
            try:
                for i in tqdm(range(samples), desc="latency samples", leave=False):
                    if time.monotonic() > deadline:
                        break  # an overloaded pipeline must not stretch the run past its budget
                    started, wall = time.perf_counter(), time.time() * 1000
                    body = trade("lat", i, 1, 10)
                    try:
                        response = await api.post("/trades", json=body)
                    except httpx.TransportError:  # a kept-alive connection the gateway closed while we waited
                        response = await api.post("/trades", json=body)  # the same trade_id: a retry is a replay
                    response.raise_for_status()
                    answered = time.time() * 1000
                    if not await update_arrives(ws, i + 1, deadline):
                        timed_out += 1
                        break  # the pipeline is that far behind: stop sampling rather than stretch the run
                    received = time.time() * 1000
                    results.append((time.perf_counter() - started) * 1000)
                    await asyncio.sleep(0.02)  # the side consumer's fetch may trail the WebSocket a little
                    on_trades, on_analytics = clock.trade_ms.get(body["trade_id"]), clock.snapshot_ms(i + 1)
                    if on_trades is not None and on_analytics is not None:
                        hops["write"].append(answered - wall)
                        hops["relay"].append(on_trades - answered)
                        hops["analytics"].append(on_analytics - on_trades)
                        hops["gateway"].append(received - on_analytics)
                loops = {s.name: loop_lag((await api.get(f"{s.url}/metrics")).text) for s in platform.running}
                loops["bench"] = loop_lag(prometheus_client.generate_latest(bench_registry).decode())
            finally:
                background.cancel()
                watcher.cancel()
                bench_probe.cancel()
                for task in (background, watcher, bench_probe):
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
                await clock.consumer.stop()
    return {
        "samples": len(results),
        "background_trades_per_s": background_rate,
        "p50_ms": percentile(results, 0.5),
        "p95_ms": percentile(results, 0.95),
        "p99_ms": percentile(results, 0.99),
        "mean_ms": statistics.fmean(results) if results else float("nan"),
        "timed_out": timed_out,
        "hops": hop_summary(hops),
        "event_loop_lag": loops,
    }


async def ingest_batch_http(trades: int, markets: int, users: int) -> float:
    """Trades/s ingest accepts through its batch API with 4 concurrent senders, batches of 500, no pacing."""
    with platform_up() as platform:
        async with api_client(platform.url("ingest"), timeout=60) as ingest:
            await create_markets(ingest, "ing", markets)
            started = time.monotonic()
            await offer(ingest, "ing", 1e9, trades / 1e9, markets=markets, users=users, batch=500)
            return trades / (time.monotonic() - started)


async def ceiling_alone(messages: int) -> float:
    with tempfile.TemporaryDirectory() as data:
        infra = start_infrastructure(Path(data), Ports(free_port(), free_port(), free_port()), environ={})
        try:
            return await ceiling(infra.kafka_bootstrap_servers, messages)
        finally:
            infra.stop()


def markdown(result: dict[str, Any]) -> str:
    raw = result["ingest_raw_topic"]
    lines = [
        f"# Opinion Market end-to-end benchmark ({result['started_at']}, {result['mode']})",
        "",
        "| figure | value |",
        "|---|---|",
        f"| ceiling: raw aiokafka consume -> produce relay | {result['ceiling_msgs_per_s']:,.0f} msg/s |",
        f"| ingest, batch HTTP (500 per batch, 4 senders) | {result['ingest_batch_http_trades_per_s']:,.0f} trades/s |",
        f"| ingest, raw topic ({raw['trades']:,} trades produced at {raw['produce_per_s']:,}/s) | "
        f"{raw['recorded_per_s']:,} trades/s recorded, {raw['published_per_s']:,} published; "
        f"ingest {raw['ingest_cpu_s_per_1000']:.2f} CPU-s per 1,000 |",
        f"| sustained end to end (highest passing step) | {result['sustained_trades_per_s']:,.0f} trades/s |",
        f"| ratio pipeline / ceiling | {result['ratio_pipeline_to_ceiling']:.3f} |",
    ]
    lat = result["latency"]
    lines.append(
        f"| trade -> WebSocket at {lat['background_trades_per_s']:,.0f} trades/s background | "
        f"p50 {lat['p50_ms']:.0f} ms, p95 {lat['p95_ms']:.0f} ms, p99 {lat['p99_ms']:.0f} ms "
        f"({lat['samples']} samples{', gave up waiting for one' if lat.get('timed_out') else ''}) |"
    )
    hops = lat.get("hops", {})
    if hops:
        lines += ["", "Trade -> WebSocket by hop (from the Kafka records' timestamps of the same trades):", ""]
        lines += ["| hop | p50 ms | p99 ms |", "|---|---|---|"]
        for name, h in hops.items():
            lines.append(f"| {name} | {h['p50_ms']:.0f} | {h['p99_ms']:.0f} |")
    lines += [
        "",
        "| step (offered trades/s) | achieved | backlog at end (trades) | by consumer | passed |",
        "|---|---|---|---|---|",
    ]
    for s in result["steps"]:
        by = ", ".join(f"{k} {v:,.0f}" for k, v in s.get("backlog", {}).items())
        lines.append(
            f"| {s['rate']:,.0f} | {s['achieved_rate']:,.0f} | {s['backlog_trades']:,.0f} | {by} | {s['passed']} |"
        )
    if result["steps"]:
        services = list(result["steps"][0]["per_service"])
        lines += [
            "",
            "CPU-seconds per 1,000 trades, per process and step (services: events/s and RSS MiB at the end of the",
            f"step; the embedded servers with their child processes); the total bounds the rate: {os.cpu_count()} "
            "cores / total:",
            "",
            "| step | " + " | ".join(services) + " | total | CPU bound |",
            "|---|" + "---|" * (len(services) + 2),
        ]
        for step in result["steps"]:
            cells = [
                f"{c['cpu_s_per_1000_trades']:.2f}"
                + (f" ({c['events_per_s']:,.0f}/s; {c['rss_mib']:.0f} MiB)" if c["rss_mib"] else "")
                for c in (step["per_service"].get(name, {}) for name in services)
                if c
            ]
            total = f"{step.get('cpu_s_per_1000_total', 0.0):.2f}"
            bound = f"{step.get('cpu_bound_trades_per_s', 0.0):,.0f} trades/s"
            lines.append(f"| {step['rate']:,.0f} | " + " | ".join([*cells, total, bound]) + " |")
        lines += [
            "",
            "Fixed and per-trade CPU: the idle platform's cores per process (measured before each step), the CPU-s",
            "per 1,000 trades beyond that, and the rate the cores the idle platform leaves allow at that cost:",
            "",
            "| step | idle cores (all processes) | busiest idle | per-trade CPU-s per 1,000 | bound |",
            "|---|---|---|---|---|",
        ]
        for step in result["steps"]:
            idle = step.get("idle_cores", {})
            if not idle:
                continue
            busiest = ", ".join(f"{n} {c:.2f}" for n, c in sorted(idle.items(), key=lambda kv: -kv[1])[:3])
            lines.append(
                f"| {step['rate']:,.0f} | {sum(idle.values()):.2f} | {busiest} | "
                f"{step['cpu_s_per_1000_marginal']:.2f} | {step['cpu_bound_marginal_trades_per_s']:,.0f} trades/s |"
            )
        lines += ["", "PostgreSQL's CPU-s per 1,000 trades by the service its backends served:", ""]
        for step in result["steps"]:
            pg = step.get("postgres_cpu_s_per_1000_by_service", {})
            split = ", ".join(f"{n} {c:.3f}" for n, c in sorted(pg.items(), key=lambda kv: -kv[1]))
            lines.append(f"- step {step['rate']:,.0f}: {split or 'not measured'}")
    lines += [
        "",
        "ingest's om_consumer_events count its raw-topic intake only (HTTP writes are not consumed events) and the",
        "gateway's live fan-out is not counted there: their events/s read 0 in the steps; their CPU still counts.",
    ]
    lines += ["", f"Machine: {os.cpu_count()} cores, shared with other work; figures move from run to run."]
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    rates = [
        float(r)
        for r in (
            args.rates.split(",")
            if args.rates
            else (["250", "500", "1000"] if quick else ["1000", "2000", "4000", "8000", "10000"])
        )
    ]
    seconds = args.step_seconds or (10.0 if quick else 60.0)
    markets, users = (50, 500) if quick else (500, 5000)
    result: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "quick" if quick else "full",
        "command": "make bench" + (" BENCH_ARGS=--quick" if quick else ""),
    }
    print("ceiling ...", flush=True)
    result["ceiling_msgs_per_s"] = await ceiling_alone(20_000 if quick else 100_000)
    print("ingest through batch HTTP ...", flush=True)
    result["ingest_batch_http_trades_per_s"] = await ingest_batch_http(5_000 if quick else 30_000, markets, users)
    print("ingest through the raw topic ...", flush=True)
    result["ingest_raw_topic"] = await raw_topic_only(20_000 if quick else 100_000)
    steps: list[Step] = []
    for rate in rates:
        print(f"sustained step at {rate:,.0f} trades/s for {seconds:.0f} s ...", flush=True)
        step = await sustained_step(rate, seconds, markets, users)
        steps.append(step)
        print(
            f"  achieved {step.achieved_rate:,.0f}/s, backlog {step.backlog_trades:,.0f} ({step.backlog}), "
            f"passed {step.passed}; CPU-s per 1,000 trades {step.cpu_s_per_1000_total:.2f} (bound "
            f"{step.cpu_bound_trades_per_s:,.0f}/s); idle {sum(step.idle_cores.values()):.2f} cores, per trade "
            f"{step.cpu_s_per_1000_marginal:.2f} CPU-s per 1,000 (bound {step.cpu_bound_marginal_trades_per_s:,.0f}/s)",
            flush=True,
        )
        if not step.passed:
            break
    result["steps"] = [s.__dict__ for s in steps]
    passing = [s.rate for s in steps if s.passed]
    result["sustained_trades_per_s"] = max(passing) if passing else 0.0
    result["ratio_pipeline_to_ceiling"] = result["sustained_trades_per_s"] / result["ceiling_msgs_per_s"]
    print("latency under background load ...", flush=True)
    result["latency"] = await latency_under_load(
        args.samples or (50 if quick else 300),
        args.background_rate,
        markets,
        users,
        max_seconds=45.0 if quick else 120.0,
    )
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short steps and fewer samples (about 3 minutes)")
    parser.add_argument(
        "--rates",
        help="comma-separated step rates in trades/s, run until one fails (default 1000,2000,4000,8000,10000; quick "
        "250,500,1000)",
    )
    parser.add_argument("--step-seconds", type=float, default=None, help="seconds per step (default 60; 10 quick)")
    parser.add_argument(
        "--latency-only", action="store_true", help="only the trade -> WebSocket latency (with its hops); prints JSON"
    )
    parser.add_argument(
        "--background-rate",
        type=float,
        default=1000.0,
        help="background trades/s during the latency samples (default 1000; lower it on a machine too busy to keep up)",
    )
    parser.add_argument(
        "--samples",
        type=int,
        default=None,
        help="latency samples (default 300; 50 quick: then p99 is the slowest sample)",
    )
    args = parser.parse_args(argv)
    if args.latency_only:
        markets, users = (50, 500) if args.quick else (500, 5000)
        samples = args.samples or (50 if args.quick else 300)
        result = asyncio.run(latency_under_load(samples, args.background_rate, markets, users))
        print(json.dumps(result, indent=2))
        return
    result = asyncio.run(run(args))
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    table = markdown(result)
    (OUT_DIR / "e2e.json").write_text(json.dumps(result, indent=2, default=str))
    (OUT_DIR / "e2e.md").write_text(table + "\n")
    print("\n" + table)
    print(f"\n(written to {OUT_DIR / 'e2e.json'} and {OUT_DIR / 'e2e.md'})")
