"""The gateway's first requests after it reports ready: each run starts a fresh gateway process (over embedded
Kafka, PostgreSQL and Redis, with no upstream services) and times, in order, a cached prediction read (the same
market twice), a read whose upstream is down, a refused write, /metrics and /openapi.json. What is lazily set up on
the first request shows as the first read being slower than the second.

    uv run python -m bench gateway_start --runs 4
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REQUESTS = (
    ("cached prediction", "GET", "/api/v1/ai-analytics/predictions/warm-1"),
    ("the same again", "GET", "/api/v1/ai-analytics/predictions/warm-1"),
    ("upstream down (503)", "GET", "/api/v1/ai-analytics/predictions/other"),
    ("refused write (422)", "POST", "/api/v1/markets"),
    ("/metrics", "GET", "/metrics"),
    ("/openapi.json", "GET", "/openapi.json"),
)


def main(argv: list[str] | None = None) -> None:
    import httpx
    import redis

    from om_cli.credentials import ensure_admin_key
    from om_cli.embedded import Ports, free_port, start_infrastructure
    from om_contracts.caches import PREDICTION_LATEST_FIELD, prediction_latest_key

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=4, help="gateway starts")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    timings: dict[str, list[float]] = {name: [] for name, _, _ in REQUESTS}
    ready_s: list[float] = []
    with tempfile.TemporaryDirectory() as data:
        infra = start_infrastructure(Path(data), Ports(free_port(), free_port(), free_port()), environ={})
        try:
            key_file, key = ensure_admin_key(Path(data))
            nowhere = f"http://127.0.0.1:{free_port()}"
            port = free_port()
            env = {
                **os.environ, **infra.env(), "GATEWAY_HTTP_PORT": str(port),
                "GATEWAY_ADMIN_API_KEY_FILE": str(key_file), "GATEWAY_LOG_LEVEL": "WARNING",
                "OTEL_SDK_DISABLED": "true", "GATEWAY_PREDICTION_URL": nowhere, "GATEWAY_INGEST_URL": nowhere,
                "GATEWAY_ANALYTICS_URL": nowhere,
            }  # fmt: skip
            cache = redis.Redis.from_url(infra.redis_url)
            cache.hset(prediction_latest_key("warm-1"), PREDICTION_LATEST_FIELD, b'{"market_id":"warm-1"}')
            for _ in range(args.runs):
                started = time.monotonic()
                gateway = subprocess.Popen([sys.executable, "-m", "om_gateway"], env=env, stdin=subprocess.DEVNULL)
                try:
                    headers = {"authorization": f"Bearer {key}"}
                    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30) as http:
                        while True:
                            try:
                                if http.get("/ready", timeout=1).status_code == 200:
                                    break
                            except httpx.HTTPError:
                                pass
                            time.sleep(0.05)
                        ready_s.append(time.monotonic() - started)
                        for name, method, path in REQUESTS:
                            sent = time.perf_counter()
                            if method == "POST":
                                http.post(path, json={})
                            else:
                                http.get(path)
                            timings[name].append((time.perf_counter() - sent) * 1000)
                finally:
                    gateway.terminate()
                    gateway.wait(30)
        finally:
            infra.stop()
    print(f"gateway first requests after ready, {args.runs} starts (ready after {_list(ready_s, 's', 1)})")
    for name, values in timings.items():
        print(f"  {name:22s} {_list(values, 'ms', 0)}")


def _list(values: list[float], unit: str, digits: int) -> str:
    return ", ".join(f"{v:.{digits}f}" for v in values) + f" {unit}"


if __name__ == "__main__":
    main()
