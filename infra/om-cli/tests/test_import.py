"""Importers: Manifold records (full and partial dumps, camelCase and snake_case, JSON, JSON lines, CSV) and the
generic format to the platform's write API; bad rows rejected with reasons, the rest kept; importing twice adds
nothing (integration test against ingest on real PostgreSQL and Kafka)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from om_cli.history.format import MarketRecord, ResolutionRecord, SignalRecord, TradeRecord, write_history
from om_cli.history.importer import (
    GRACE,
    CredentialRefused,
    ImportReport,
    import_records,
    make_client,
    market_steps,
    read_generic,
)
from om_cli.history.manifold import Rejects, read_manifold
from om_cli.history.simulated import HistoryConfig, simulate_history
from om_cli.testing import app_client, consume_until

FIXTURES = Path(__file__).parent / "fixtures"


def test_manifold_full_dump() -> None:
    rejects = Rejects()
    records = read_manifold(FIXTURES / "manifold", rejects)
    markets = {r.market_id: r for r in records if isinstance(r, MarketRecord)}
    assert set(markets) == {"mf-abcDEF123", "mf-mkt-no", "mf-mkt-mkt", "mf-mkt-cancel"}
    assert markets["mf-abcDEF123"].category == "infrastructure"
    assert markets["mf-abcDEF123"].created_at == datetime(2024, 1, 1, tzinfo=UTC)
    assert markets["mf-mkt-mkt"].question == "Share of votes for the incumbent"
    trades = {r.trade_id: r for r in records if isinstance(r, TradeRecord)}
    assert set(trades) == {"mf-b1", "mf-b2", "mf-b3", "mf-b5"}
    assert trades["mf-b3"].side == "SELL" and trades["mf-b3"].amount == 5 and not trades["mf-b3"].amount_estimated
    settle = {r.market_id: r for r in records if isinstance(r, ResolutionRecord)}
    assert settle["mf-mkt-mkt"].resolution_price == 0.37 and settle["mf-mkt-cancel"].resolution == "CANCEL"
    assert settle["mf-abcDEF123"].resolved_at == datetime(2024, 2, 2, tzinfo=UTC)
    reasons = " | ".join(rejects.counts)
    for expected in ("redemption", "no id", "its market is not in the markets file", "not in [0, 1]", "not JSON"):
        assert expected in reasons
    assert "mf-mkt-broken" in " ".join(rejects.examples)  # no close, resolution or bets to date it


def test_manifold_partial_dump_infers_side_and_estimates_amount() -> None:
    rejects = Rejects()
    records = read_manifold(FIXTURES / "manifold-partial", rejects)
    trades = [r for r in records if isinstance(r, TradeRecord)]
    assert len(trades) == 3 and all(t.amount_estimated and t.side == "BUY" for t in trades)
    up, down = (t for t in trades if t.market_id == "mf-p1")
    assert up.outcome == "YES" and down.outcome == "NO"
    b = 100 / math.log(2)  # no liquidity given: the documented default
    assert up.amount == pytest.approx(b * math.log(0.5 / 0.4), rel=1e-5)
    assert "no price move" in " ".join(rejects.counts)
    p2 = next(r for r in records if isinstance(r, MarketRecord) and r.market_id == "mf-p2")
    assert p2.question == "p2" and p2.initial_price == 0.5
    assert len({t.trade_id for t in trades}) == 3


def test_generic_format_rejects_bad_rows_and_keeps_the_rest(tmp_path: Path) -> None:
    write_history(tmp_path, list(simulate_history(3, seed=1, history=HistoryConfig(trades_per_market=5))))
    with (tmp_path / "trades.jsonl").open("a") as f:
        f.write('{"trade_id": "bad", "market_id": "x"}\n{"broken\n')
    rejects = Rejects()
    records = read_generic(tmp_path, rejects)
    assert sum(isinstance(r, MarketRecord) for r in records) == 3
    assert rejects.total == 2 and "missing field 'user_id'" in " ".join(rejects.counts)


@pytest.mark.integration
async def test_import_twice_gives_one_copy_and_resumes(kafka_bootstrap: str, database_url: str, tmp_path: Path) -> None:
    from om_ingest.app import create_app
    from om_ingest.settings import IngestSettings

    start = datetime.now(UTC) - timedelta(days=30)
    records = list(simulate_history(4, seed=9, history=HistoryConfig(trades_per_market=12, start=start)))
    # one market cancelled, so every kind of life-cycle event is imported
    records = [
        replace(r, resolution="CANCEL", resolution_price=None, reason="ambiguous")
        if isinstance(r, ResolutionRecord) and r is next(x for x in records if isinstance(x, ResolutionRecord))
        else r
        for r in records
    ]
    settings = IngestSettings(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, DATABASE_URL=database_url)
    async with app_client(create_app(settings)) as ingest:
        # the gateway's /api/v1 is ingest's /v1; the importer only sees a base URL and a path prefix
        client = make_client("http://test", transport=ingest._transport)  # noqa: SLF001 - the app's ASGI transport
        checkpoint = tmp_path / "done"
        # one market at a time: ingest can deadlock on concurrent batches that insert the same new users (its bug,
        # reported); over HTTP the importer retries that 500, in-process the exception would end the test
        first = await import_records(
            client, records, source="t", checkpoint=checkpoint, api="/v1", progress=False, concurrency=1
        )
        n_trades = sum(isinstance(r, TradeRecord) for r in records)
        n_signals = sum(isinstance(r, SignalRecord) for r in records)
        assert first.imported["markets"] == 4 and first.imported["trades"] == n_trades, first.lines()
        assert n_signals and first.imported["signals"] == n_signals, first.lines()
        settled = [r for r in records if isinstance(r, ResolutionRecord)]
        assert first.imported["closes"] == len(settled) and not sum(first.skipped.values()), first.lines()
        assert first.rejected.total == 0, first.lines()
        again = await import_records(client, records, source="t", api="/v1", progress=False, concurrency=1)
        assert sum(again.imported.values()) == 0 and again.skipped["trades"] == n_trades, again.lines()
        assert again.skipped["signals"] == n_signals and again.skipped["closes"] == len(settled), again.lines()
        resumed = await import_records(
            client, records, source="t", checkpoint=checkpoint, api="/v1", progress=False, concurrency=1
        )
        assert resumed.resumed_markets == 4 and not resumed.imported and not resumed.skipped
        stored = 0
        for m in (r for r in records if isinstance(r, MarketRecord)):
            reply = await ingest.get(f"/v1/markets/{m.market_id}/trades", params={"limit": 1000})
            stored += len(reply.json())
            market = (await ingest.get(f"/v1/markets/{m.market_id}")).json()
            assert market["status"] in ("resolved", "cancelled")
        assert stored == n_trades
        await client.aclose()
    # every event keeps its original time: creation, trades, close, resolution or cancellation
    expected = {}
    for r in records:
        if isinstance(r, MarketRecord):
            expected[("market.created", r.market_id)] = r.created_at
        elif isinstance(r, TradeRecord):
            expected[("trade.executed", r.trade_id)] = r.executed_at
        elif isinstance(r, ResolutionRecord):
            expected[("market.closed", r.market_id)] = r.closed_at
            kind = "market.cancelled" if r.resolution == "CANCEL" else "market.resolved"
            expected[(kind, r.market_id)] = r.resolved_at
    assert {k for k, _ in expected} == {
        "market.created",
        "trade.executed",
        "market.closed",
        "market.resolved",
        "market.cancelled",
    }
    seen: dict[tuple[str, str], datetime] = {}

    def seen_all(kinds: set[str]) -> Callable[[list[dict]], bool]:
        def check(messages: list[dict]) -> bool:
            for m in messages:
                ident = m.get("trade_id") if m["event_type"] == "trade.executed" else m.get("market_id")
                seen[(m["event_type"], ident)] = datetime.fromisoformat(m["occurred_at"])
            messages.clear()
            return {k for k in expected if k[0] in kinds} <= seen.keys()

        return check

    await consume_until(kafka_bootstrap, "market.lifecycle.v1", seen_all({k for k, _ in expected} - {"trade.executed"}))
    await consume_until(kafka_bootstrap, "market.trades.v1", seen_all({"trade.executed"}))
    assert {k: seen[k] for k in expected} == expected


def test_report_lists_reasons() -> None:
    report = ImportReport()
    report.rejected.add("bet", "no userId", "b1")
    assert "1 x bet: no userId" in "\n".join(report.lines())
    assert isinstance(make_client("http://x", "k"), httpx.AsyncClient)


async def test_a_refused_credential_stops_the_import_at_the_first_write() -> None:
    """Without a valid key every write would be refused; the import stops at once with the status instead of
    counting 2,000 markets' records as rejected one by one."""
    requests: list[httpx.Request] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(401, json={"detail": "send Authorization: Bearer <key>"})

    client = make_client("http://test", "wrong", transport=httpx.MockTransport(refuse))
    with pytest.raises(CredentialRefused, match="401"):
        await import_records(client, list(simulate_history(5, seed=1)), source="generic", progress=False)
    await client.aclose()
    assert len(requests) <= 5  # the markets created concurrently in the first round, nothing after


def test_steps_keep_every_market_event_within_the_feature_services_grace() -> None:
    """The importer sends a market's steps in order, each as trades then signals. The feature service applies an
    event in full only if it is at most grace_s older than its market's newest event so far: check that holds for
    every event, and that the steps hold every event once (sending all trades and then all signals fails this)."""
    from om_feature.features import FeatureConfig

    assert GRACE.total_seconds() == FeatureConfig().grace_s
    records = list(simulate_history(30, seed=4))
    for market in (r for r in records if isinstance(r, MarketRecord)):
        trades = [r for r in records if isinstance(r, TradeRecord) and r.market_id == market.market_id]
        signals = [r for r in records if isinstance(r, SignalRecord) and r.market_id == market.market_id]
        steps = market_steps(trades, signals)
        arrival: list[tuple[datetime, str]] = []
        for step in steps:
            arrival += [(t.executed_at, t.trade_id) for t in step.trades]
            arrival += [(s.observed_at, s.signal_id) for s in step.signals]
        assert sorted(i for _, i in arrival) == sorted([t.trade_id for t in trades] + [s.signal_id for s in signals])
        newest = arrival[0][0]
        for at, ident in arrival:
            assert at >= newest - GRACE, f"{ident} arrives {newest - at} after a newer event of its market"
            newest = max(newest, at)
        assert len(steps) < len(trades) + len(signals)  # batching still gathers events
    naive = [(t.executed_at, 0) for t in trades] + [(s.observed_at, 1) for s in signals]
    late = sum(at < max(t.executed_at for t in trades) - GRACE for at, kind in naive if kind == 1)
    assert late > 0  # all trades, then all signals: signals arrive too late to count


async def test_rows_the_platform_refuses_are_rejected_with_its_reason_and_the_rest_imported() -> None:
    """Bad input: a trades batch holding one trade the platform refuses (422) is all or nothing, so the importer
    retries its trades one by one: the bad one is rejected with the platform's reason, every other is imported,
    and the market is still settled."""
    records = list(simulate_history(2, seed=3, history=HistoryConfig(trades_per_market=8)))
    trades = [r for r in records if isinstance(r, TradeRecord)]
    bad = trades[len(trades) // 2].trade_id
    seen: list[str] = []

    def platform(request: httpx.Request) -> httpx.Response:
        path, body = request.url.path, json.loads(request.content or b"{}")
        seen.append(path)
        if path == "/api/v1/trades/batch":
            if any(t["trade_id"] == bad for t in body["trades"]):
                return httpx.Response(422, json={"detail": [{"loc": ["body", "trades", 3, "amount"], "msg": "bad"}]})
            return httpx.Response(201, json={"recorded": len(body["trades"])})
        if path == "/api/v1/trades" and body["trade_id"] == bad:
            return httpx.Response(422, json={"detail": [{"loc": ["body", "amount"], "msg": "must be > 0"}]})
        if path == "/api/v1/signals/batch":
            return httpx.Response(201, json={"recorded": len(body["signals"])})
        return httpx.Response(200 if path.endswith(("/close", "/resolve", "/cancel")) else 201, json={})

    client = make_client("http://test", "k", transport=httpx.MockTransport(platform))
    report = await import_records(client, records, source="t", progress=False)
    await client.aclose()
    assert report.rejected.total == 1, report.lines()
    assert "trades: HTTP 422: body.amount: must be > 0" in report.rejected.counts
    assert any(bad in e for e in report.rejected.examples)
    assert report.imported["trades"] == len(trades) - 1 and report.imported["markets"] == 2, report.lines()
    settled = sum(isinstance(r, ResolutionRecord) for r in records)
    assert report.imported["closes"] == settled and seen.count("/api/v1/trades") >= 1


def test_manifold_path_may_be_one_markets_file(tmp_path: Path) -> None:
    """PATH a single file: a markets dump alone (here JSON lines, camelCase, ISO times) gives markets and their
    settlements; a bets dump alone has no markets to attach them to and says so."""
    markets = tmp_path / "dump.jsonl"
    markets.write_text(
        json.dumps(
            {
                "id": "solo",
                "question": "Alone?",
                "createdTime": "2024-03-01T00:00:00Z",
                "closeTime": "2024-03-05T00:00:00Z",
                "isResolved": True,
                "resolution": "NO",
            }
        )  # fmt: skip
        + "\n"
    )
    rejects = Rejects()
    records = read_manifold(markets, rejects)
    assert [type(r).__name__ for r in records] == ["MarketRecord", "ResolutionRecord"] and not rejects.total
    assert records[1].resolved_at == datetime(2024, 3, 5, tzinfo=UTC)  # no resolutionTime: the close
    with pytest.raises(ValueError, match="no markets file"):
        read_manifold(FIXTURES / "manifold" / "bets.jsonl", Rejects())
