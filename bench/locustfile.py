"""Load test of the public REST API through the gateway: writes (markets, trades) and reads (market, trades,
analytics, predictions), with the credential every client sends. Run headless against a running platform:

    uvx --from locust==2.47.0 locust -f bench/locustfile.py --headless -u 20 -r 5 -t 60s \
        --host http://127.0.0.1:8000 --csv .om/locust --html .om/locust.html

The credential: $OM_API_KEY, else the file `om up` writes (<data dir>/credentials/admin-api-key, data dir $OM_DATA_DIR
or .om); without either, requests go out unauthenticated (a platform without authentication accepts them).
CI compares the figures with the last kept baseline (bench/perf_gate.py).
"""

from __future__ import annotations

import itertools
import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from locust import HttpUser, between, task

_sequence = itertools.count()


def credential_headers() -> dict[str, str]:
    key = os.environ.get("OM_API_KEY")
    if not key:
        path = Path(os.environ.get("OM_DATA_DIR", ".om")) / "credentials" / "admin-api-key"
        key = path.read_text(encoding="utf-8").strip() if path.is_file() else None
    return {"Authorization": f"Bearer {key}"} if key else {}


class Trader(HttpUser):
    """Opens a market, then trades in it and reads it back, like a client app polling its screens."""

    wait_time = between(0.05, 0.2)

    def on_start(self) -> None:
        self.client.headers.update(credential_headers())
        self.market = f"load-{uuid.uuid4().hex[:10]}"
        close_at = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        body = {"market_id": self.market, "question": "Will the load test pass?", "close_at": close_at}
        self.client.post("/api/v1/markets", json=body, name="POST /markets")

    @task(4)
    def trade(self) -> None:
        i = next(_sequence)
        body = {
            "market_id": self.market,
            "user_id": f"load-user-{i % 100}",
            "outcome": "YES" if i % 2 else "NO",
            "amount": 1.0,
            "shares": 2.0,
            "price": round(0.3 + (i % 40) / 100, 2),
        }
        self.client.post("/api/v1/trades", json=body, name="POST /trades")

    @task(3)
    def read_market(self) -> None:
        self.client.get(f"/api/v1/markets/{self.market}", name="GET /markets/{id}")

    @task(2)
    def read_trades(self) -> None:
        self.client.get(f"/api/v1/markets/{self.market}/trades", name="GET /markets/{id}/trades")

    @task(2)
    def read_analytics(self) -> None:
        # 404 until analytics has seen the market: a normal answer, not a failure.
        path = f"/api/v1/ai-analytics/analytics/market/{self.market}"
        with self.client.get(path, name="GET /analytics/market/{id}", catch_response=True) as reply:
            if reply.status_code in (200, 404):
                reply.success()

    @task(1)
    def list_markets(self) -> None:
        self.client.get("/api/v1/markets", name="GET /markets")
