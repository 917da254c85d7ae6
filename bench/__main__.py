"""Measure the running pipeline on this machine: latency from an HTTP trade to the WebSocket update, ingest
and end-to-end throughput, and each service's memory. Starts embedded servers and the five services itself.

    make bench                      # or: uv run python -m bench --trades 2000 --latency-samples 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import websockets

from om_cli.credentials import auth_headers
from om_cli.embedded import Ports, free_port, start_infrastructure
from om_cli.platform import Platform, ServicePorts


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def create_market(http: httpx.AsyncClient) -> str:
    market = f"bench-{uuid.uuid4().hex[:8]}"
    close_at = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    reply = await http.post("/markets", json={"market_id": market, "question": "bench?", "close_at": close_at})
    reply.raise_for_status()
    return market


def trade(market: str, i: int) -> dict:
    return {
        "market_id": market,
        "user_id": f"u{i % 50}",
        "outcome": "YES",
        "amount": 1.0,
        "shares": 2.0,
        "price": round(0.3 + (i % 40) / 100, 2),
    }


async def latency(gateway: str, samples: int, api_key: str | None) -> list[float]:
    """Seconds from POST /trades to the market_update it causes on a subscribed WebSocket."""
    api = httpx.AsyncClient(base_url=gateway + "/api/v1", timeout=10, headers=auth_headers(api_key))
    ws_url = gateway.replace("http", "ws", 1) + f"/api/v1/ai-analytics/ws/analytics/bench?token={api_key}"
    async with api, websockets.connect(ws_url) as ws:
        market = await create_market(api)
        await ws.send(json.dumps({"type": "subscribe", "market_ids": [market]}))
        results = []
        for i in range(samples):
            started = time.perf_counter()
            (await api.post("/trades", json=trade(market, i))).raise_for_status()
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if message["type"] == "market_update" and message["market"]["trade_count"] == i + 1:
                    break
            results.append(time.perf_counter() - started)
        return results


async def throughput(gateway: str, analytics: str, trades: int, batch: int, api_key: str | None) -> tuple[float, float]:
    """(trades/s accepted by the API in batches, trades/s through to analytics)."""
    async with httpx.AsyncClient(base_url=gateway + "/api/v1", timeout=60, headers=auth_headers(api_key)) as api:
        market = await create_market(api)
        started = time.perf_counter()
        for offset in range(0, trades, batch):
            body = {"trades": [trade(market, i) for i in range(offset, min(trades, offset + batch))]}
            (await api.post("/trades/batch", json=body)).raise_for_status()
        accepted = time.perf_counter() - started
        async with httpx.AsyncClient(base_url=analytics, timeout=10) as internal:
            # polling is the point here: the benchmark watches analytics from outside, as a client would
            while (await internal.get(f"/v1/markets/{market}/metrics")).json().get("trade_count") != trades:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        processed = time.perf_counter() - started
    return trades / accepted, trades / processed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trades", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--latency-samples", type=int, default=200)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as data:
        infra = start_infrastructure(Path(data), Ports(free_port(), free_port(), free_port()), environ={})
        platform = Platform(infra.env(), Path(data) / "logs", ServicePorts(*(free_port() for _ in range(5))))
        try:
            platform.start(timeout_s=90)
            gateway, analytics = platform.url("gateway"), platform.url("analytics")
            lat = asyncio.run(latency(gateway, args.latency_samples, platform.admin_api_key))
            accepted, through = asyncio.run(
                throughput(gateway, analytics, args.trades, args.batch, platform.admin_api_key)
            )
            memory = {s.name: rss_mib(s.process.pid) for s in platform.running}
        finally:
            platform.stop()
            infra.stop()

    ms = [x * 1000 for x in lat]
    print(f"\nOpinion Market benchmark ({args.latency_samples} latency samples, {args.trades} trades)\n")
    print("trade -> WebSocket market_update latency (HTTP POST through ingest, outbox, Kafka, analytics, gateway)")
    print(
        f"  p50 {percentile(ms, 0.5):7.1f} ms   p95 {percentile(ms, 0.95):7.1f} ms   "
        f"p99 {percentile(ms, 0.99):7.1f} ms   mean {statistics.fmean(ms):7.1f} ms"
    )
    print(f"ingest, batches of {args.batch}:       {accepted:8.0f} trades/s accepted")
    print(f"end to end into analytics:   {through:8.0f} trades/s (through feature/prediction in parallel)")
    print("resident memory after the run (MiB): " + ", ".join(f"{k} {v:.0f}" for k, v in memory.items()))


if __name__ == "__main__":
    main()
