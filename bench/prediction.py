"""Batched prediction throughput of a trained ensemble, per core: `make bench-prediction`.

Trains a model on simulated history (about a minute), then scores batches of feature rows on one thread, with and
without explanations. (The gateway's cached-prediction p99 is not measured here yet.)"""

from __future__ import annotations

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
    return 0


if __name__ == "__main__":
    sys.exit(main(*(int(a) for a in sys.argv[1:])))
