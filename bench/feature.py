"""The feature service alone on the embedded broker: pre-produce a stream (default 200,000 trades over 500 markets
and 20,000 users), start `feature`, and print trade events/s from the first vector to the last, vectors
published, the process's peak RSS, and the engine's state bytes per market at 1,000 / 10,000 / 100,000 markets.

    make bench-feature                      # or: uv run python -m bench.feature --trades 50000 --spacing-ms 0.1
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from tqdm import tqdm

from om_cli.embedded import Ports, free_port, start_infrastructure
from om_contracts import decode
from om_contracts.topics import topic
from om_feature import synthetic
from om_feature.engine import Engine
from om_feature.synthetic import StreamSpec


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def watch_vectors(
    bootstrap: str, expected: dict[str, int], timeout_s: float, service: subprocess.Popen[bytes]
) -> tuple[int, float, float]:
    """Read feature.vectors.v1 until every market's vector shows all its trades; return (vectors, first and last
    vector's broker timestamps in seconds) — the producer's timestamps, so this reader's own lag does not count."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=50)
    await consumer.start()
    remaining = dict(expected)
    count, first, last = 0, float("inf"), 0.0

    try:
        deadline = time.monotonic() + timeout_s
        while not (partitions := consumer.partitions_for_topic("feature.vectors.v1")):
            await consumer.topics()
            await asyncio.sleep(0.2)
        consumer.assign([TopicPartition("feature.vectors.v1", p) for p in partitions])
        with tqdm(total=sum(expected.values()), desc="trades reflected in vectors", unit="trade") as bar:
            while remaining:
                if service.poll() is not None:
                    raise RuntimeError(f"the feature service exited with {service.returncode}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{len(remaining)} market(s) never showed all their trades")
                batch = await consumer.getmany(timeout_ms=500, max_records=20_000)
                for records in batch.values():
                    for r in records:
                        count += 1
                        first, last = min(first, r.timestamp / 1000), max(last, r.timestamp / 1000)
                        v = json.loads(r.value)
                        market, seen = v["market_id"], v["features"]["trade_count"]
                        if market in remaining and seen >= remaining[market]:
                            bar.update(remaining.pop(market))
    finally:
        await consumer.stop()
    return count, first, last


async def _ready(port: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=2) as http:
            return (await http.get(f"http://127.0.0.1:{port}/ready")).status_code == 200
    except httpx.HTTPError:
        return False


def state_bytes_per_market(markets: int, trades_per_market: int = 10) -> tuple[float, float]:
    """Heap bytes the engine holds per market after `trades_per_market` trades each, and per applied event id
    (the partitions' dedupe window, bounded by time, not by markets), by tracemalloc."""
    spec = StreamSpec(markets=markets, trades=markets * trades_per_market, users=20_000, spacing_ms=10_000 / markets)
    messages = [(decode(topic(t), v), 0, None) for t, _, v in synthetic.stream(spec)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    engine = Engine()
    for i in range(0, len(messages), 10_000):
        engine.process(messages[i : i + 10_000])
    del messages
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    ids = sum(len(a.seen) for a in engine.applied.values())
    engine.applied.clear()
    gc.collect()
    markets_only = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(engine.markets) == markets
    return markets_only / markets, (held - markets_only) / max(ids, 1)


async def main(args: argparse.Namespace) -> None:
    spec = StreamSpec(markets=args.markets, trades=args.trades, users=args.users, spacing_ms=args.spacing_ms)
    print(
        f"stream: {spec.trades:,} trades, {spec.markets:,} markets, {spec.users:,} users, "
        f"{spec.spacing_ms} ms of event time between trades"
    )
    with tempfile.TemporaryDirectory() as data:
        infra = start_infrastructure(Path(data), Ports(free_port(), free_port(), free_port()), environ={})
        env = {**os.environ, **infra.env(), "FEATURE_HTTP_PORT": str(free_port()), "FEATURE_LOG_LEVEL": "WARNING"}
        try:
            from om_runtime.kafka import ensure_topics

            await ensure_topics(infra.kafka_bootstrap_servers)
            started = time.monotonic()
            produced = await synthetic.produce(infra.kafka_bootstrap_servers, synthetic.stream(spec))
            print(f"pre-produced {produced:,} events in {time.monotonic() - started:.1f} s")
            expected = synthetic.trades_per_market(spec)
            # One child started once, before the measurement: a blocking Popen is fine here.
            service = subprocess.Popen([sys.executable, "-m", "om_feature"], env=env)  # noqa: ASYNC220
            profiler = None
            if args.profile:  # py-spy (PyPI; `uv tool run --from py-spy`) for folded stacks of the service
                profiler = subprocess.Popen(  # noqa: ASYNC220  # nosec B607  # opt-in profile with the developer's uv on PATH
                    [
                        "uv",
                        "tool",
                        "run",
                        "--from",
                        "py-spy",
                        "py-spy",
                        "record",
                        "-p",
                        str(service.pid),
                        "-f",
                        "raw",
                        "-r",
                        "50",
                        "-o",
                        args.profile,
                        "-d",
                        str(int(args.timeout)),
                    ],
                    stdout=subprocess.DEVNULL,
                )
            try:
                while not await _ready(env["FEATURE_HTTP_PORT"]):  # startup (imports, migrations) is not measured
                    if service.poll() is not None:
                        raise RuntimeError(f"the feature service exited with {service.returncode}")
                    await asyncio.sleep(0.2)
                cpu_before = cpu_seconds(service.pid)
                count, first, last = await watch_vectors(infra.kafka_bootstrap_servers, expected, args.timeout, service)
                cpu = cpu_seconds(service.pid) - cpu_before
                rss = peak_rss_mib(service.pid)
                async with httpx.AsyncClient() as http:
                    ready = await http.get(f"http://127.0.0.1:{env['FEATURE_HTTP_PORT']}/ready")
            finally:
                if profiler is not None:
                    profiler.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT
                    profiler.wait(timeout=30)
                service.send_signal(signal.SIGTERM)
                try:
                    service.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    service.kill()
        finally:
            infra.stop()
    span = max(last - first, 1e-9)
    print(f"feature /ready during the run: {ready.status_code}")
    print(f"trade events/s, first vector to last:  {spec.trades / span:,.0f}  ({spec.trades:,} trades in {span:.2f} s)")
    print(
        f"feature CPU seconds for the stream:    {cpu:.1f}  ({spec.trades / max(cpu, 1e-9):,.0f} trades per CPU-second)"
    )
    print(f"vectors published:                     {count:,}")
    print(f"feature peak RSS:                      {rss:,.0f} MiB")
    per_id = 0.0
    for markets in args.state_markets:
        per_market, per_id = state_bytes_per_market(markets)
        print(f"state bytes per market at {markets:>7,} markets (10 trades each): {per_market:,.0f}")
    per_market, _ = state_bytes_per_market(1_000, 200)
    print(f"state bytes per market at   1,000 markets (200 trades each): {per_market:,.0f}")
    print(f"dedupe window: {per_id:,.0f} bytes per applied event id (kept FEATURE_DEDUPE_WINDOW_S after a checkpoint)")
    print("(a shared 2-core machine: compare runs made back to back)")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trades", type=int, default=200_000)
    parser.add_argument("--markets", type=int, default=500)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--spacing-ms", type=float, default=1.0, help="event time between consecutive trades")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--profile", metavar="FILE", help="record the service with py-spy (folded stacks) into FILE")
    parser.add_argument("--state-markets", type=int, nargs="*", default=[1_000, 10_000, 100_000])
    asyncio.run(main(parser.parse_args()))


if __name__ == "__main__":
    cli()
