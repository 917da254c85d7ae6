"""`make bench-prediction`: batched prediction throughput of a trained ensemble per core, and the latency of a
cached prediction read through the gateway.

1. Trains a model on simulated history (seconds), then scores batches on one thread (OMP_NUM_THREADS=1). The
   headline is what the service does with every vector: `score_batch` of 1,000 feature vectors (matrix,
   imputation, the ensemble with contributions, top 5 per row, risk), in predictions per CPU-second. The
   detail lines are `Ensemble.predict` alone with and without contributions, per batch size, and the
   booster's tree SHAP (kept for on-demand explanations).
2. Starts embedded Kafka/PostgreSQL/Redis and the five services, makes one market trade so a prediction is
   cached, then reads `GET /api/v1/ai-analytics/predictions/{id}` sequentially and prints p50/p99, and the CPU
   time the gateway and prediction processes spent per 1,000 reads (less their idle rate, measured just before),
   which a busy machine disturbs far less than the latency.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import psutil  # type: ignore[import-untyped]  # noqa: E402  # ships no type hints; no stubs in the lock

from om_cli.history.offline_features import snapshot_rows  # noqa: E402
from om_cli.history.simulated import simulate_history  # noqa: E402
from om_prediction.registry import Registry, load  # noqa: E402
from om_prediction.training import dataset as ds  # noqa: E402
from om_prediction.training.pipeline import train  # noqa: E402


async def _cached_latency(
    gateway: str, api_key: str, samples: int, on_start: Callable[[], object] = lambda: None
) -> list[float]:
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
        on_start()
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
            processes = {n: psutil.Process(platform.service(n).process.pid) for n in ("gateway", "prediction")}
            cpu = _CpuMeter(processes)
            cpu.idle(3.0)
            url, key = platform.url("gateway"), platform.admin_api_key or ""
            lat = sorted(x * 1000 for x in asyncio.run(_cached_latency(url, key, samples, on_start=cpu.start)))
            per_1000 = {n: 1000 * used / samples for n, used in cpu.used().items()}
        finally:
            platform.stop()
            infra.stop()
    p50, p99 = lat[len(lat) // 2], lat[min(len(lat) - 1, int(0.99 * len(lat)))]
    print(f"cached prediction through the gateway ({samples} sequential GETs): p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    print("  CPU-s per 1,000 reads: " + ", ".join(f"{n} {v:.3f}" for n, v in per_1000.items()))


class _CpuMeter:
    """CPU seconds each process spent between start() and used(), less what it spends idle (its background loops:
    Kafka fetches, heartbeats), measured by idle() just before."""

    def __init__(self, processes: dict[str, psutil.Process]) -> None:
        self.processes = processes
        self.idle_rate = dict.fromkeys(processes, 0.0)
        self.begin: tuple[float, dict[str, float]] = (0.0, {})

    def _now(self) -> tuple[float, dict[str, float]]:
        times = {n: p.cpu_times() for n, p in self.processes.items()}
        return time.monotonic(), {n: t.user + t.system for n, t in times.items()}

    def idle(self, seconds: float) -> None:
        wall, before = self._now()
        time.sleep(seconds)
        wall2, after = self._now()
        self.idle_rate = {n: (after[n] - before[n]) / (wall2 - wall) for n in before}

    def start(self) -> None:
        self.begin = self._now()

    def used(self) -> dict[str, float]:
        wall, after = self._now()
        began, before = self.begin
        return {n: after[n] - before[n] - self.idle_rate[n] * (wall - began) for n in after}


def _rate(fn: Callable[[int], object], batch: int, seconds: float = 3.0) -> float:
    """Predictions per CPU-second of this process (robust to other load on the machine)."""
    fn(0)
    n, i, wall, cpu = 0, 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - wall < seconds:
        fn(i)
        n, i = n + batch, i + 1
    return n / (time.process_time() - cpu)


def main(markets: int = 600) -> int:
    from om_contracts import MarketFeatures
    from om_prediction.scoring import score_batch

    rows = list(snapshot_rows(list(simulate_history(markets, seed=1))))
    with tempfile.TemporaryDirectory() as root:
        registry = Registry(Path(root))
        entry = train(rows, registry, progress=False)
        model = load(registry.root, entry)
    x = ds.build(rows).x
    x = np.resize(x, (max(len(x), 20_000), x.shape[1]))
    vectors = [MarketFeatures.model_validate(r["features"]) for r in rows]
    vectors = (vectors * (1 + 20_000 // len(vectors)))[:20_000]
    gc.freeze()  # as the service does once a model is loaded (om_prediction.serving)

    def chunk(i: int, batch: int) -> slice:
        start = (i * batch) % (len(x) - batch + 1)
        return slice(start, start + batch)

    served = _rate(lambda i: score_batch(model, entry["version"], vectors[chunk(i, 1000)]), 1000)
    explained = _rate(lambda i: model.predict(x[chunk(i, 1000)], explain=True), 1000)
    print(f"explained predictions (with contributions), batch 1000: {explained:,.0f} /s/core (goal >= 50,000)")
    print(f"  served: score_batch of 1000 vectors (+ top 5, risk, result objects): {served:,.0f} /s/core")
    for explain in (True, False):
        for batch in (100, 1000, 5000):

            def score(i: int, b: int = batch, e: bool = explain) -> object:
                return model.predict(x[chunk(i, b)], explain=e)

            rate = _rate(score, batch)
            label = "with" if explain else "without"
            print(f"  Ensemble.predict batch {batch:>5} {label} contributions: {rate:,.0f} predictions/s/core")
    shap = _rate(lambda i: model.explain_shap(x[chunk(i, 1000)]), 1000, seconds=1.0)
    print(f"  on-demand tree SHAP (explain_shap, batch 1000): {shap:,.0f} predictions/s/core")
    gateway_latency()
    return 0


if __name__ == "__main__":
    sys.exit(main(*(int(a) for a in sys.argv[1:])))
