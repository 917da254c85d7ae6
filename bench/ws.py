"""WebSocket fan-out benchmark: one gateway process, N clients spread over several client processes (each its own
Python, so client CPU is measured apart from the gateway's), each client subscribed to `system` and one market
channel; one update per second per channel, published to Kafka with its event time. Prints connected clients,
messages/s, p50/p99 delivery delay (event time → received, snapshots excluded), the gateway's CPU and RSS per
client, and the client processes' CPU.

    make bench-ws                                   # 10,000 clients, 4 client processes, 30 s
    make bench-ws BENCH_WS_ARGS="--clients 2000 --duration 10"
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

CLK = os.sysconf("SC_CLK_TCK")


# --- client process -----------------------------------------------------------------------------------


async def run_clients(url: str, count: int, first: int, markets: int) -> None:
    import websockets

    connected = failed = 0
    window: list[float] = []  # [t0, t1] once the parent says go
    delays: list[int] = []
    received = 0
    gate = asyncio.Semaphore(64)
    all_connected = asyncio.Event()

    async def one(i: int) -> None:
        nonlocal connected, failed, received
        async with gate:
            for attempt in range(5):  # a loaded machine refuses or times out a few handshakes: retry them
                try:
                    ws = await websockets.connect(
                        url, max_queue=None, ping_interval=None, open_timeout=120, compression=None
                    )
                    await ws.recv()  # welcome
                    break
                except (OSError, TimeoutError, websockets.WebSocketException):
                    await asyncio.sleep(1 + attempt)
            else:
                failed += 1  # counted out, so the others still start (the report shows how many connected)
                if connected + failed == count:
                    all_connected.set()
                return
            channels = ["system", f"market/bench-{(first + i) % markets}"]
            await ws.send(json.dumps({"type": "subscribe", "id": i, "channels": channels}))
        connected += 1
        if connected + failed == count:
            all_connected.set()
        async for raw in ws:
            if not isinstance(raw, str) or not window:
                continue
            if raw.startswith(('{"type":"snapshot"', '{"type":"ack"', '{"type":"heartbeat"')):
                continue
            now = time.time()
            if window[0] <= now < window[1]:
                at = raw.find('"timestamp":"')
                stamp = raw[at + 13 : raw.index('"', at + 13)]
                delays.append(round((now - datetime.fromisoformat(stamp).timestamp()) * 1000))
                received += 1

    tasks = [asyncio.create_task(one(i)) for i in range(count)]
    await all_connected.wait()
    print("connected", flush=True)
    line = await asyncio.to_thread(sys.stdin.readline)  # "go <t0> <t1>"
    _, t0, t1 = line.split()
    window.extend([float(t0), float(t1)])
    await asyncio.sleep(max(0.0, float(t0) - time.time()))
    cpu0 = _cpu_self()
    await asyncio.sleep(max(0.0, float(t1) - time.time()) + 0.5)
    cpu = _cpu_self() - cpu0
    print(json.dumps({"connected": connected, "received": received, "delays": delays, "cpu_s": cpu}), flush=True)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- the parent ---------------------------------------------------------------------------------------


def _proc(pid: int) -> tuple[float, float]:
    """(CPU seconds, RSS MiB) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK
    rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return cpu, rss


async def publish_updates(bootstrap: str, markets: int, stop: asyncio.Event) -> int:
    """One update per second on `system` and on each market channel, stamped with the time it is sent."""
    from aiokafka import AIOKafkaProducer

    from om_contracts import MarketMetricsUpdated, SystemMetrics, SystemMetricsUpdated, encode

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, linger_ms=5)
    await producer.start()
    sent = 0
    try:
        while not stop.is_set():
            started = time.monotonic()
            now = datetime.now(UTC)
            system = SystemMetricsUpdated(
                occurred_at=now, producer="bench",
                system_metrics=SystemMetrics(total_users=1, active_users=1, total_markets=markets,
                                             active_markets=markets, total_volume_24h=1.0, total_trades_24h=sent),
                top_markets=[],
            )  # fmt: skip
            futures = [await producer.send("analytics.system.v1", encode(system), key=b"system")]
            for m in range(markets):
                update = MarketMetricsUpdated(
                    occurred_at=datetime.now(UTC), producer="bench", market_id=f"bench-{m}", status="open",
                    current_price=0.5, price_change_24h=0.0, volume_24h=1.0, total_volume=1.0, trade_count=sent,
                    participant_count=1,
                )  # fmt: skip
                futures.append(await producer.send("analytics.market.v1", encode(update), key=f"bench-{m}".encode()))
            await asyncio.gather(*futures)
            sent += 1
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
    finally:
        await producer.stop()
    return sent


def percentile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]) if ordered else float("nan")


async def bench(args: argparse.Namespace) -> None:
    import httpx

    from om_cli.credentials import ensure_admin_key
    from om_cli.embedded import Ports, free_port, start_infrastructure

    markets = args.markets or max(1, args.clients // 100)
    with tempfile.TemporaryDirectory() as data:
        infra = start_infrastructure(Path(data), Ports(free_port(), free_port(), free_port()), environ={})
        key_file, key = ensure_admin_key(Path(data))
        port = free_port()
        env = {
            **os.environ, **infra.env(), "GATEWAY_HTTP_PORT": str(port), "GATEWAY_ADMIN_API_KEY_FILE": str(key_file),
            "GATEWAY_WS_MAX_CONNECTIONS_PER_PRINCIPAL": str(args.clients + 10),
            "GATEWAY_WS_MAX_CONNECTIONS_PER_IP": str(args.clients + 10), "GATEWAY_LOG_LEVEL": "WARNING",
            "OTEL_SDK_DISABLED": "true",
        }  # fmt: skip
        gateway = subprocess.Popen([sys.executable, "-m", "om_gateway"], env=env, stdin=subprocess.DEVNULL)  # noqa: ASYNC220 - starts and returns
        clients: list[subprocess.Popen[str]] = []
        stop = asyncio.Event()
        producer: asyncio.Task[int] | None = None
        try:
            base = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient() as http:
                for _ in range(600):
                    try:
                        if (await http.get(f"{base}/ready", timeout=1)).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    await asyncio.sleep(0.1)
            producer = asyncio.create_task(publish_updates(infra.kafka_bootstrap_servers, markets, stop))
            _, rss_idle = _proc(gateway.pid)
            url = f"ws://127.0.0.1:{port}/api/v1/ws?token={key}"
            per = -(-args.clients // args.processes)
            started = time.monotonic()
            for p in range(args.processes):
                count = min(per, args.clients - p * per)
                cmd = [sys.executable, "-m", "bench.ws", "--client", url, str(count), str(p * per), str(markets)]
                clients.append(subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))  # noqa: ASYNC220
            for client in clients:
                line = await asyncio.to_thread(client.stdout.readline)  # type: ignore[union-attr]
                assert line.strip() == "connected", f"a client process failed: {line!r}"
            ramp = time.monotonic() - started
            t0 = time.time() + 2.0
            t1 = t0 + args.duration
            for client in clients:
                client.stdin.write(f"go {t0} {t1}\n")  # type: ignore[union-attr]
                client.stdin.flush()  # type: ignore[union-attr]
            await asyncio.sleep(max(0.0, t0 - time.time()))
            cpu0, _ = _proc(gateway.pid)
            await asyncio.sleep(max(0.0, t1 - time.time()))
            cpu1, rss = _proc(gateway.pid)
            async with httpx.AsyncClient(timeout=120) as http:  # a saturated gateway answers late
                try:
                    metrics = (await http.get(f"{base}/metrics", headers={"authorization": f"Bearer {key}"})).text
                except httpx.HTTPError:
                    metrics = ""
            results = []
            for client in clients:
                out = await asyncio.to_thread(client.stdout.read)  # type: ignore[union-attr]
                results.append(json.loads(out.strip().splitlines()[-1]))
        finally:
            stop.set()
            if producer is not None:
                await producer
            for client in clients:
                client.kill()
                client.wait()
            gateway.terminate()
            gateway.wait(30)
            infra.stop()

    connected = sum(r["connected"] for r in results)
    delays = [d for r in results for d in r["delays"]]
    client_cpu = sum(r["cpu_s"] for r in results)
    expected = connected * 2 * args.duration  # two channels, one update per second each
    print(f"WebSocket fan-out: {connected} clients over {args.processes} client processes, {markets} markets, "
          f"{args.duration:g} s measured (connect ramp {ramp:.1f} s)")  # fmt: skip
    print(f"  messages received   {len(delays)} ({len(delays) / args.duration:,.0f}/s; "
          f"{len(delays) / max(1, expected):.1%} of the {expected:,} expected)")  # fmt: skip
    print(f"  delivery delay      p50 {percentile(delays, 0.5):.0f} ms   p99 {percentile(delays, 0.99):.0f} ms   "
          f"max {max(delays, default=0):.0f} ms   (event time -> received, snapshots excluded)")  # fmt: skip
    print(f"  event -> gateway    {_lag_summary(metrics)} (Kafka hop: event time -> queued for the clients)")
    per_message = (cpu1 - cpu0) / max(1, len(delays)) * 1e6
    print(f"  gateway CPU         {(cpu1 - cpu0) / args.duration:.0%} of a core; {per_message:.1f} µs per message")
    print(f"  gateway RSS         {rss:.0f} MiB; {(rss - rss_idle) * 1024 / max(1, connected):.1f} KiB per client")
    print(f"  client processes    {client_cpu / args.duration:.0%} of a core in all")
    print("  (one 2-core machine: the gateway, the clients, Kafka and the producer share it)")


def _lag_summary(metrics: str) -> str:
    """Share of updates queued within 50 / 250 ms of their event time, from the gateway's histogram."""
    buckets = {}
    for line in metrics.splitlines():
        if line.startswith("gateway_live_update_lag_seconds_bucket"):
            le = line.split('le="')[1].split('"')[0]
            buckets[le] = float(line.rsplit(" ", 1)[1])
    total = buckets.get("+Inf", 0.0)
    if not total:
        return "n/a"
    return f"{buckets['0.05'] / total:.0%} within 50 ms, {buckets['0.25'] / total:.0%} within 250 ms"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        url, count, first, markets = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
        asyncio.run(run_clients(url, count, first, markets))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--processes", type=int, default=4, help="client processes (at most 20,000 sockets each)")
    parser.add_argument("--markets", type=int, default=0, help="market channels (default: one per 100 clients)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds measured after all are connected")
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
