"""Exactly-once effect, against real Kafka, PostgreSQL and Redis: analytics runs as its own process, is killed
with SIGKILL mid-stream and restarted; the stream holds duplicates, shuffled event times, signals, a resolution
and a cancellation. Afterwards every market's and every user's metrics equal those recomputed here, with the
pure definitions, from the events sent."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess  # nosec B404
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest

from om_analytics import metrics
from om_analytics.portfolio import Position, UserTotals, positions_from_trades, settle, user_metrics
from om_cli.embedded import free_port
from om_cli.testing import eventually, produce
from om_contracts import (
    MarketCancelled,
    MarketCreated,
    MarketResolved,
    PredictionMade,
    SignalObserved,
    TradeExecuted,
    encode,
)

pytestmark = pytest.mark.integration

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
TOL = {"abs": 2e-6, "rel": 1e-9}


def make_stream(seed: int = 7) -> dict:
    # bandit: a reproducible test stream, not security
    rng = random.Random(seed)  # nosec B311
    tag = uuid.uuid4().hex[:6]
    markets = [f"x{tag}-{i}" for i in range(6)]
    users = [f"u{tag}-{i}" for i in range(15)]
    created = [
        MarketCreated(
            occurred_at=T0,
            producer="t",
            market_id=m,
            question="q?",
            category=("sports", "politics", "tech")[i % 3],
            close_at=T0 + timedelta(days=3 + i),
            initial_price=0.5,
        )  # fmt: skip
        for i, m in enumerate(markets)
    ]
    trades, price = [], dict.fromkeys(markets, 0.5)
    for i in range(1500):
        m = rng.choice(markets)
        after = min(0.99, max(0.01, round(price[m] + rng.uniform(-0.05, 0.05), 4)))
        trades.append(
            TradeExecuted(
                # Event times spread over two days, and shuffled below: arrival order is not event order.
                occurred_at=T0 + timedelta(seconds=rng.randrange(0, 2 * 86400)),
                producer="t",
                trade_id=f"{tag}-{i}",
                market_id=m,
                user_id=rng.choice(users),
                outcome=rng.choice(("YES", "NO")),
                side=rng.choice(("BUY", "BUY", "SELL")),
                amount=round(rng.uniform(1, 50), 2),
                shares=round(rng.uniform(1, 80), 2),
                price_before=price[m],
                price_after=after,
            )  # fmt: skip
        )
        price[m] = after
    rng.shuffle(trades)
    signals = [
        SignalObserved(
            occurred_at=T0 + timedelta(seconds=rng.randrange(0, 2 * 86400)),
            producer="t",
            signal_id=f"s{i}",
            market_id=rng.choice(markets),
            kind=rng.choice(("social", "news")),
            source="src",
            text="text",
            sentiment=rng.choice((None, round(rng.uniform(-1, 1), 3))),
        )  # fmt: skip
        for i in range(200)
    ]
    end = T0 + timedelta(days=2, hours=1)
    predictions = [
        PredictionMade(
            occurred_at=end,
            producer="t",
            market_id=m,
            probability=0.3 + 0.1 * i,
            confidence=0.7,
            risk_level="low",
            model_version="v-test",
            features_as_of=end - timedelta(minutes=i),
        )  # fmt: skip
        for i, m in enumerate(markets)
    ]
    ended = [
        MarketResolved(occurred_at=end, producer="t", market_id=markets[0], resolution="YES", resolution_price=1.0),
        MarketCancelled(occurred_at=end, producer="t", market_id=markets[1], reason="void"),
    ]
    # Redeliveries: the same events again, and the same trade under a new event id.
    duplicates = trades[:100] + [trades[200].model_copy(update={"event_id": uuid.uuid4()})]
    return {"created": created, "trades": trades, "signals": signals, "predictions": predictions,
            "ended": ended, "duplicates": duplicates, "markets": markets, "users": users}  # fmt: skip


def expected_markets(stream: dict, as_of: datetime) -> dict[str, dict]:
    start, _ = metrics.window_minutes(as_of)
    status = {e.market_id: "resolved" if isinstance(e, MarketResolved) else "cancelled" for e in stream["ended"]}
    result = {}
    for m in stream["markets"]:
        trades = [t for t in stream["trades"] if t.market_id == m]
        events = trades + [s for s in stream["signals"] if s.market_id == m]
        buckets = {b_start: b for (_, b_start), b in metrics.fold(events, "1m").items()}
        current = max(trades, key=metrics.trade_key).price_after
        active = len({t.user_id for t in trades if metrics.bucket_start(t.occurred_at, "1m") > start})
        result[m] = {
            "status": status.get(m, "open"),
            "current_price": current,
            "total_volume": round(sum(t.amount for t in trades), 6),
            "trade_count": len(trades),
            "participant_count": len({t.user_id for t in trades}),
            **metrics.market_window_metrics(
                current,
                metrics.reference_price(buckets, as_of, opening_price=0.5),
                metrics.window_totals(buckets, as_of),
                active,
            ),
        }
    return result


def expected_users(stream: dict, as_of: datetime) -> dict[str, dict]:
    ended = {e.market_id: e for e in stream["ended"]}
    category = {c.market_id: c.category for c in stream["created"]}
    prices = {m: v["current_price"] for m, v in expected_markets(stream, as_of).items()}
    positions = positions_from_trades(stream["trades"])
    result = {}
    for u in {t.user_id for t in stream["trades"]}:
        mine = [t for t in stream["trades"] if t.user_id == u]
        settled_pnl, counted, won = 0.0, 0, 0
        for m, e in ended.items():
            held = [p for (user, market, _), p in positions.items() if user == u and market == m]
            if held:
                s = settle(held, "resolved" if isinstance(e, MarketResolved) else "cancelled",
                           getattr(e, "resolution_price", None))  # fmt: skip
                settled_pnl, counted, won = settled_pnl + s.pnl, counted + s.counted, won + s.won
        open_held: list[tuple[Position, float]] = [
            (p, prices[market]) for (user, market, _), p in positions.items() if user == u and market not in ended
        ]
        volume_by_category: dict[str, float] = {}
        for t in mine:
            volume_by_category[category[t.market_id]] = volume_by_category.get(category[t.market_id], 0) + t.amount
        totals = UserTotals(
            total_trades=len(mine), total_volume=sum(t.amount for t in mine),
            first_trade_at=min(t.occurred_at for t in mine), last_trade_at=max(t.occurred_at for t in mine),
            settled_pnl=settled_pnl, resolved_positions=counted, winning_positions=won,
        )  # fmt: skip
        result[u] = user_metrics(totals, open_held, volume_by_category, as_of)
    return result


def start_analytics(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        # bandit: this interpreter and a fixed module, no shell
        return subprocess.Popen(  # nosec B603
            [sys.executable, "-m", "om_analytics"], env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


async def get(http: httpx.AsyncClient, url: str) -> httpx.Response:
    """GET, with a service not (yet) listening turned into a failed check for `eventually`."""
    try:
        return await http.get(url)
    except httpx.TransportError as exc:
        raise AssertionError(f"analytics not answering: {exc!r}") from exc


async def test_sigkill_and_redelivery_change_no_metric(
    kafka_bootstrap: str, database_url: str, redis_url: str, tmp_path: Path
) -> None:
    stream = make_stream()
    port = free_port()
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "DATABASE_URL": database_url, "REDIS_URL": redis_url,
        "ANALYTICS_HTTP_PORT": str(port), "ANALYTICS_REDIS_PREFIX": f"t{uuid.uuid4().hex[:8]}",
        "ANALYTICS_SYSTEM_INTERVAL_S": "0.2", "ANALYTICS_SERVICE_URLS": "{}", "ANALYTICS_IDLE_ADVANCE_S": "0",
        "OTEL_TRACES_EXPORTER": "none",
    }  # fmt: skip
    log = tmp_path / "analytics.log"
    base = f"http://127.0.0.1:{port}/v1"
    process = start_analytics(env, log)
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            # Markets first, so each trade's category is known when it is processed.
            await produce(kafka_bootstrap, "market.lifecycle.v1", [encode(e) for e in stream["created"]])

            async def all_markets_known() -> None:
                for m in stream["markets"]:
                    assert (await get(http, f"{base}/markets/{m}/metrics")).status_code == 200

            await eventually(all_markets_known, timeout_s=60)
            body = [encode(e) for e in stream["trades"] + stream["duplicates"]]
            await produce(kafka_bootstrap, "market.trades.v1", body[:900])

            # SIGKILL mid-stream: some trades applied, not all.
            async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    n = (await (await conn.execute("SELECT count(*) FROM analytics.trades")).fetchone())[0]
                    if n > 0:
                        break
                    await asyncio.sleep(0.01)
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            assert 0 < n < len(stream["trades"])
            await produce(kafka_bootstrap, "market.trades.v1", body[900:])
            await produce(kafka_bootstrap, "market.signals.v1", [encode(e) for e in stream["signals"]])
            await produce(kafka_bootstrap, "prediction.predictions.v1", [encode(e) for e in stream["predictions"]])
            await produce(kafka_bootstrap, "market.lifecycle.v1", [encode(e) for e in stream["ended"]])
            # Redelivered lifecycle events and predictions too (the same bytes: the same event ids).
            await produce(kafka_bootstrap, "market.lifecycle.v1", [encode(e) for e in stream["ended"]])
            process = start_analytics(env, log)

            as_of = max(
                [t.occurred_at for t in stream["trades"]]
                + [s.occurred_at for s in stream["signals"]]
                + [e.occurred_at for e in stream["ended"]]
                + [p.features_as_of for p in stream["predictions"]]
            )
            want_markets = expected_markets(stream, as_of)
            produced = {str(e.event_id) for key in ("created", "trades", "duplicates", "signals", "predictions",
                                                     "ended") for e in stream[key]}  # fmt: skip

            # Everything applied and every snapshot recomputed after it. (Topics are consumed side by side: the
            # final clock, statuses and trade counts can all be reached while signals still wait, so checking
            # those alone compared a snapshot that was about to change — the old intermittent failure.)
            async def all_applied() -> None:
                async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
                    applied = await (
                        await conn.execute(
                            "SELECT count(*) FROM analytics.consumed_events WHERE event_id = ANY(%s::uuid[])",
                            (list(produced),),
                        )
                    ).fetchone()
                    assert applied is not None and applied[0] == len(produced), "events still to apply"
                    dirty = await (
                        await conn.execute(
                            "SELECT (SELECT count(*) FROM analytics.markets WHERE dirty) "
                            "+ (SELECT count(*) FROM analytics.users WHERE dirty)"
                        )
                    ).fetchone()
                    assert dirty is not None and dirty[0] == 0, "snapshots still to recompute"

            await eventually(all_applied, timeout_s=90)

            async def markets_settled() -> dict[str, dict]:
                got = {}
                for m in stream["markets"]:
                    reply = await get(http, f"{base}/markets/{m}/metrics")
                    assert reply.status_code == 200
                    got[m] = reply.json()
                    assert datetime.fromisoformat(got[m]["as_of"]) == as_of, "windows not at the final clock yet"
                    assert got[m]["status"] == want_markets[m]["status"]
                    assert got[m]["trade_count"] == want_markets[m]["trade_count"]
                return got

            got_markets = await eventually(markets_settled, timeout_s=90)
            for m, want in want_markets.items():
                for field, value in want.items():
                    if isinstance(value, float):
                        assert got_markets[m][field] == pytest.approx(value, **TOL), (m, field)
                    else:
                        assert got_markets[m][field] == value, (m, field)
            resolved_market = got_markets[stream["markets"][0]]
            assert resolved_market["resolution_price"] == 1.0
            assert resolved_market["predicted_probability"] == 0.3 and resolved_market["model_version"] == "v-test"

            want_users = expected_users(stream, as_of)
            for u, want in want_users.items():
                reply = await http.get(f"{base}/users/{u}/metrics")
                assert reply.status_code == 200, reply.text
                got = reply.json()
                for field in ("total_trades", "resolved_positions", "winning_positions", "open_positions",
                              "preferred_categories"):  # fmt: skip
                    assert got[field] == want[field], (u, field)
                for field in ("total_volume", "realized_pnl", "unrealized_pnl", "total_pnl", "exposure",
                              "risk_score", "trades_per_day"):  # fmt: skip
                    assert got[field] == pytest.approx(want[field], abs=1e-4), (u, field)
                if want["success_rate"] is None:
                    assert got["success_rate"] is None
                else:
                    assert got["success_rate"] == pytest.approx(want["success_rate"], abs=1e-6)

            system = (await http.get(f"{base}/system/metrics")).json()["system_metrics"]
            start, _ = metrics.window_minutes(as_of)
            in_window = [t for t in stream["trades"] if metrics.bucket_start(t.occurred_at, "1m") > start]
            assert system["total_trades_24h"] == len(in_window)
            assert system["total_volume_24h"] == pytest.approx(sum(t.amount for t in in_window), abs=1e-4)
            assert system["total_users"] == len(want_users)
            assert system["active_markets"] == 4
    finally:
        stop(process)
        if process.returncode not in (0, -signal.SIGTERM, -signal.SIGKILL):
            print(log.read_text()[-5000:])
    # The second run found the first one's work: each trade stored once.
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM analytics.trades").fetchone()[0] == len(stream["trades"])
    assert "Traceback" not in log.read_text(), log.read_text()[-5000:]


def test_stream_fixture_is_shuffled() -> None:
    """The stream above really is out of order (otherwise the test would prove less than it says)."""
    trades = make_stream()["trades"]
    assert any(a.occurred_at > b.occurred_at for a, b in zip(trades, trades[1:], strict=False))
    assert json.loads(encode(trades[0]))["trade_id"] == trades[0].trade_id
