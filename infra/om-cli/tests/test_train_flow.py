"""The README's training flow from a fresh clone, as a user runs it, at a small scale (200 markets):
`om simulate --history` -> `om up` -> `om import` -> `om train` (from feature's export) -> `om models promote` ->
the running platform swaps to the model, and a fresh `om up` serves it too (the registry survives the reset)."""

from __future__ import annotations

import os
import re
import subprocess  # nosec B404  # runs fixed programs from argument lists, never a shell
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from om_cli.credentials import auth_headers
from om_cli.testing import free_ports, read_until

pytestmark = pytest.mark.e2e
MARKETS = 200
TRADES_PER_MARKET = 30  # a quarter of the default: a shorter test, enough history to train on


def om(*args: str, env: dict[str, str], timeout: float = 600) -> str:
    # bandit: the argument list is built from constants and paths this test controls; no shell
    result = subprocess.run(  # nosec B603
        [sys.executable, "-m", "om_cli", *args], capture_output=True, text=True, timeout=timeout, env=env
    )
    assert result.returncode == 0, f"om {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def port_args() -> list[str]:
    ports = [("--kafka-port", 1), ("--postgres-port", 1), ("--redis-port", 1), ("--gateway-port", 1)]
    return [a for flag, n in [*ports, ("--service-ports-from", 4)] for a in (flag, str(free_ports(n)))]


class Up:
    """`om up --no-simulator` in the background, on free ports; stopped with `om down`."""

    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        self.data_dir, self.env, args = data_dir, env, port_args()
        self.gateway = f"http://127.0.0.1:{args[args.index('--gateway-port') + 1]}"
        self.feature = f"http://127.0.0.1:{int(args[args.index('--service-ports-from') + 1]) + 1}"
        self.kafka = f"127.0.0.1:{args[args.index('--kafka-port') + 1]}"
        # bandit: the argument list is built from constants and paths this test controls; no shell
        self.process = subprocess.Popen(  # nosec B603
            [sys.executable, "-m", "om_cli", "up", *args, "--data-dir", str(data_dir), "--no-simulator"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        try:
            read_until(self.process, "Dashboard", timeout_s=180)
        except BaseException:
            self.down()
            raise
        self.key = (data_dir / "credentials" / "admin-api-key").read_text().strip()

    def down(self) -> None:
        om("down", "--data-dir", str(self.data_dir), env=self.env, timeout=120)
        self.process.communicate(timeout=60)


def served_version(up: Up) -> str:
    """Make a market trade once, and return the model_version of the prediction the gateway serves for it."""
    market = f"flow-{uuid.uuid4().hex[:8]}"
    close_at = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    with httpx.Client(base_url=up.gateway + "/api/v1", headers=auth_headers(up.key), timeout=30) as api:
        api.post("/markets", json={"market_id": market, "question": "flow?", "close_at": close_at}).raise_for_status()
        trade = {"market_id": market, "user_id": "u1", "outcome": "YES", "amount": 5.0, "shares": 9.0, "price": 0.55}
        api.post("/trades", json=trade).raise_for_status()
        deadline = time.monotonic() + 60
        while (reply := api.get(f"/ai-analytics/predictions/{market}")).status_code != 200:
            assert time.monotonic() < deadline, f"no prediction for {market} within 60 s: {reply.text}"
            time.sleep(0.5)
        return str(reply.json()["model_version"])


def exported_markets(feature_url: str) -> int:
    markets: set[str] = set()
    cursor = None
    with httpx.Client(base_url=feature_url, timeout=30) as client:
        while True:
            body = client.get(
                "/v1/training/snapshots", params={"limit": 5000, **({"cursor": cursor} if cursor else {})}
            )
            body.raise_for_status()
            markets |= {item["market_id"] for item in body.json()["items"]}
            if not (cursor := body.json().get("next_cursor")):
                return len(markets)


def assert_no_look_ahead(history: Path, feature_url: str) -> None:
    """Every exported row, from the real platform fed by the import, counts only the trades of its market up to
    its `as_of`: a row that knew of a later trade (count or volume) fails this."""
    from om_cli.history.format import TradeRecord, read_history
    from om_prediction.cli import export_rows

    trades: dict[str, list[TradeRecord]] = {}
    for t in read_history(history)["trades"]:
        assert isinstance(t, TradeRecord)
        trades.setdefault(t.market_id, []).append(t)
    rows = list(export_rows(feature_url))
    exact = 0
    for row in rows:
        as_of = datetime.fromisoformat(row["as_of"])
        known = [t for t in trades.get(row["market_id"], []) if t.executed_at <= as_of]
        assert row["features"]["trade_count"] <= len(known), row
        # feature sums volume in whole millionths: each trade may round up by half of one
        assert row["features"]["total_volume"] <= sum(t.amount for t in known) + 1e-6 * (1 + len(known)), row
        exact += row["features"]["trade_count"] == len(known)
    assert rows and exact > 0.9 * len(rows), f"{exact} of {len(rows)} rows count exactly the trades before as_of"


@pytest.mark.timeout(1500)  # two platform starts and an import on a shared machine
def test_simulate_import_train_promote_up_serves_the_model(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "REDIS_URL")}
    env["OM_MODELS_DIR"] = str(tmp_path / "models")  # om up starts embedded servers; models in the test's folder
    history = tmp_path / "h"
    om("simulate", "--history", str(MARKETS), "--out", str(history), "--seed", "5",
       "--trades-per-market", str(TRADES_PER_MARKET), env=env)  # fmt: skip
    resolved = sum(
        1 for line in (history / "resolutions.jsonl").read_text().splitlines() if re.search(r'"(YES|NO)"', line)
    )
    up = Up(tmp_path / "om", env)
    try:
        assert served_version(up) == "baseline-market-price"
        report = om("import", str(history), "--url", up.gateway, "--api-key", up.key, env=env)
        assert "rejected: 0" in report and f"'markets': {MARKETS}" in report, report
        deadline = time.monotonic() + 300
        while (exported := exported_markets(up.feature)) < resolved:  # feature catches up with the imported events
            assert time.monotonic() < deadline, f"feature exported {exported} of {resolved} resolved markets"
            time.sleep(2)
        assert_no_look_ahead(history, up.feature)
        trained = om("train", "--feature-url", up.feature, env=env)
        version = re.search(r"candidate (\S+):", trained)
        assert version, trained
        # the CronJob's command on the same export: a candidate, promoted only by the rule (a registry of its own)
        cron = tmp_path / "cron-models"
        # bandit: the argument list is built from constants and paths this test controls; no shell
        once = subprocess.run(  # nosec B603
            [sys.executable, "-m", "om_prediction", "retrain-loop", "--once", "--feature-url", up.feature,
             "--models-dir", str(cron), "--kafka", up.kafka],
            capture_output=True, text=True, timeout=600, env=env,
        )  # fmt: skip
        assert once.returncode == 0 and "candidate m" in once.stdout, once.stdout + once.stderr
        assert len(list(cron.glob("m*/model.pkl"))) == 1
        assert (up.data_dir / "logs" / "retrain.log").exists()  # om up runs the loop beside the services
        # 200 markets are too few for the 95 % bound against the price: the rule's documented flag relaxes it here
        promoted = om("models", "promote", version[1], "--max-upper-vs-market", "1", "--kafka", up.kafka, env=env)
        assert f"{version[1]} is now production" in promoted and "announced on model.lifecycle.v1" in promoted
        deadline = time.monotonic() + 60
        while (served := served_version(up)) != version[1]:  # the running platform swaps to it
            assert time.monotonic() < deadline, f"still serving {served} after promoting {version[1]}"
    finally:
        up.down()
    again = Up(tmp_path / "om", env)  # `make up` again: Kafka/PostgreSQL/Redis reset, the registry kept
    try:
        assert served_version(again) == version[1]
    finally:
        again.down()
    listed = om("models", "list", env=env)
    assert re.search(rf"{re.escape(version[1])}\s+production", listed), listed
    assert os.path.exists(tmp_path / "models" / version[1] / "report.md")
