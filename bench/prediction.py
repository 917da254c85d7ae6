"""`make bench-prediction`: batched prediction throughput of a trained ensemble per core, and the latency of a
cached prediction read through the gateway.

1. Trains a model on simulated history (about a minute), then scores batches of feature rows on one thread
   (OMP_NUM_THREADS=1), with and without contributions.
2. Starts embedded Kafka/PostgreSQL/Redis and the five services, makes one market trade so a prediction is
   cached, then reads `GET /api/v1/ai-analytics/predictions/{id}` sequentially and prints p50/p99.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from om_cli.history.offline_features import snapshot_rows  # noqa: E402
from om_cli.history.simulated import simulate_history  # noqa: E402
from om_prediction.registry import Registry, load  # noqa: E402
from om_prediction.training import dataset as ds  # noqa: E402
from om_prediction.training.pipeline import train  # noqa: E402


async def _cached_latency(gateway: str, api_key: str, samples: int) -> list[float]:
    import uuid
    from datetime import UTC, datetime, timedelta

    import httpx

    from om_cli.credentials import auth_headers

    headers = auth_headers(api_key)
    async with httpx.AsyncClient(base_url=gateway + "/api/v1", timeout=10, headers=headers) as api:
        market = f"bench-{uuid.uuid4().hex[:8]}"
        close_at = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        (
            await api.post("/markets", json={"market_id": market, "question": "bench?", "close_at": close_at})
        ).raise_for_status()
        trade = {"market_id": market, "user_id": "u1", "outcome": "YES", "amount": 5.0, "shares": 9.0, "price": 0.55}
        (await api.post("/trades", json=trade)).raise_for_status()
        deadline = time.monotonic() + 60
        while (await api.get(f"/ai-analytics/predictions/{market}")).status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("no prediction within 60 s")
            await asyncio.sleep(0.2)
        for _ in range(50):  # warm up connections
            await api.get(f"/ai-analytics/predictions/{market}")
        out = []
        for _ in range(samples):
            started = time.perf_counter()
            (await api.get(f"/ai-analytics/predictions/{market}")).raise_for_status()
            out.append(time.perf_counter() - started)
        return out


def gateway_latency(samples: int = 2000) -> None:
    from om_cli.embedded import Ports, free_port, start_infrastructure
    from om_cli.platform import Platform, ServicePorts

    with tempfile.TemporaryDirectory() as data:
        infra = start_infrastructure(Path(data), Ports(free_port(), free_port(), free_port()), environ={})
        env = {**infra.env(), "OM_MODELS_DIR": str(Path(data) / "models")}
        platform = Platform(env, Path(data) / "logs", ServicePorts(*(free_port() for _ in range(5))))
        try:
            platform.start(timeout_s=120)
            lat = sorted(
                x * 1000 for x in asyncio.run(_cached_latency(platform.url("gateway"), platform.admin_api_key, samples))
            )
        finally:
            platform.stop()
            infra.stop()
    p50, p99 = lat[len(lat) // 2], lat[min(len(lat) - 1, int(0.99 * len(lat)))]
    print(f"cached prediction through the gateway ({samples} sequential GETs): p50 {p50:.2f} ms, p99 {p99:.2f} ms")


def main(markets: int = 600) -> int:
    rows = list(snapshot_rows(list(simulate_history(markets, seed=1))))
    with tempfile.TemporaryDirectory() as root:
        registry = Registry(Path(root))
        entry = train(rows, registry, progress=False)
        model = load(registry.root, entry)
    x = ds.build(rows).x
    x = np.resize(x, (max(len(x), 20_000), x.shape[1]))
    for explain in (False, True):
        for batch in (100, 1000, 5000):
            n, started = 0, time.perf_counter()
            while time.perf_counter() - started < 3.0:
                for i in range(0, len(x) - batch + 1, batch):
                    model.predict(x[i : i + batch], explain=explain)
                    n += batch
                    if time.perf_counter() - started >= 3.0:
                        break
            rate = n / (time.perf_counter() - started)
            print(f"batch {batch:>5} {'with' if explain else 'without'} contributions: {rate:,.0f} predictions/s/core")
    gateway_latency()
    return 0


if __name__ == "__main__":
    sys.exit(main(*(int(a) for a in sys.argv[1:])))
