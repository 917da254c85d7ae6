"""Does per-market sampling (`dataset.sample_per_market`, 32 rows a market) help through the training rows or
through the held-out rows? A 2 x 2: train+validation rows sampled or all, x held-out rows sampled or all, same
markets in each fold (the split is by market resolution time either way).

Rows: feature's training export, either from a running platform (`--export URL`, e.g. after `om import`), or
emulated offline (the default): simulated history fed in event-time order to feature's own `Engine` (a snapshot
per market per 15 min of event time with activity, as the service takes them), joined as the export query does
(resolved markets, snapshots strictly before close and resolution).

    uv run python -m bench.prediction_sampling [--markets 2000] [--seed 1] [--export http://127.0.0.1:8002]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import numpy as np

from om_cli.history.format import MarketRecord, Record, ResolutionRecord, SignalRecord, TradeRecord
from om_cli.history.simulated import simulate_history
from om_contracts import MarketCancelled, MarketClosed, MarketCreated, MarketResolved, SignalObserved, TradeExecuted
from om_feature.engine import Engine, EngineConfig, Vector
from om_prediction.model import TrainParams, fit_ensemble
from om_prediction.training import dataset as ds
from om_prediction.training.evaluate import score


def _events(records: list[Record]) -> list[Any]:
    """The history's records as the platform's events, in event-time order (creation, trades/signals, close,
    resolution at equal times)."""
    out: list[tuple[datetime, int, int, Any]] = []
    for n, r in enumerate(records):
        if isinstance(r, MarketRecord):
            e: Any = MarketCreated(
                occurred_at=r.created_at, producer="h", market_id=r.market_id, question=r.question,
                category=r.category, close_at=r.close_at, initial_price=r.initial_price,
            )  # fmt: skip
            out.append((r.created_at, 0, n, e))
        elif isinstance(r, TradeRecord):
            trade = {
                "occurred_at": r.executed_at, "producer": "h", "trade_id": r.trade_id, "market_id": r.market_id,
                "user_id": r.user_id, "outcome": r.outcome, "side": r.side, "amount": r.amount, "shares": r.shares,
                "price_before": r.price_before, "price_after": r.price_after,
            }  # fmt: skip
            out.append((r.executed_at, 1, n, TradeExecuted.model_validate(trade)))
        elif isinstance(r, SignalRecord):
            signal = {
                "occurred_at": r.observed_at, "producer": "h", "signal_id": r.signal_id, "market_id": r.market_id,
                "kind": r.kind, "source": r.source, "text": r.text, "sentiment": r.sentiment,
            }  # fmt: skip
            out.append((r.observed_at, 1, n, SignalObserved.model_validate(signal)))
        elif isinstance(r, ResolutionRecord):
            out.append((r.closed_at, 2, n, MarketClosed(occurred_at=r.closed_at, producer="h", market_id=r.market_id)))
            if r.resolution == "CANCEL":
                e = MarketCancelled(occurred_at=r.resolved_at, producer="h", market_id=r.market_id, reason=r.reason)
            else:
                settled = {
                    "occurred_at": r.resolved_at, "producer": "h", "market_id": r.market_id,
                    "resolution": r.resolution, "resolution_price": r.resolution_price,
                }  # fmt: skip
                e = MarketResolved.model_validate(settled)
            out.append((r.resolved_at, 3, n, e))
    out.sort(key=lambda e: (e[0], e[1], e[2]))
    return [e[3] for e in out]


def offline_export(markets: int, seed: int) -> list[dict[str, Any]]:
    engine = Engine(EngineConfig())
    events = _events(list(simulate_history(markets, seed=seed)))
    snapshots: dict[str, list[Vector]] = defaultdict(list)
    outcomes = []
    for i in range(0, len(events), 2000):
        out = engine.process((e, 0, None) for e in events[i : i + 2000])
        outcomes += out.outcomes
        for s in out.snapshots:
            snapshots[s.market_id].append(s)
    out = engine.flush()
    outcomes += out.outcomes
    for s in out.snapshots:
        snapshots[s.market_id].append(s)

    def at(t: float | None) -> datetime | None:
        return None if t is None else datetime.fromtimestamp(t, UTC)

    rows = []
    for o in sorted(outcomes, key=lambda o: (o.resolved_at, o.market_id)):
        end = min(t for t in (o.resolved_at, o.closed_at, o.close_at) if t is not None)
        rows += [
            {
                "market_id": o.market_id,
                "category": o.category,
                "as_of": at(s.as_of),
                "close_at": at(o.close_at),
                "created_at": at(o.created_at),
                "resolved_at": at(o.resolved_at),
                "resolution": o.resolution,
                "resolution_price": o.resolution_price,
                "features": s.features,
            }  # fmt: skip
            for s in sorted(snapshots[o.market_id], key=lambda s: s.as_of)
            if s.as_of < end
        ]
    return rows


def two_by_two(rows: list[dict[str, Any]]) -> None:
    full, sampled = ds.time_split(ds.build(rows, per_market=None)), ds.time_split(ds.build(rows))
    for a, b in zip(full, sampled, strict=True):
        assert set(a.market_ids.tolist()) == set(b.market_ids.tolist())  # noqa: S101 - same markets, or no 2 x 2
    print(f"rows train/validation/held-out: all {[len(f) for f in full]}, sampled {[len(f) for f in sampled]}")
    for name, folds in (("all", full), ("sampled", sampled)):
        far = np.mean(np.nan_to_num(folds[2].days_remaining, nan=0.0) >= 3)
        print(f"  held-out rows ({name}): {far:.0%} at 3 days or more before close")
    for train_name, folds in (("all", full), ("sampled", sampled)):
        model = fit_ensemble(folds[0].x, folds[0].y, folds[1].x, folds[1].y, TrainParams())
        for test_name, test in (("all", full[2]), ("sampled", sampled[2])):
            p = model.predict(test.x).probability
            s = score(p, test.market_price, test.y, test.market_ids)
            print(
                f"train {train_name:<7} held-out {test_name:<7} rows {s.rows:>6}: Brier {s.brier:.4f} vs market "
                f"{s.market_brier:.4f}, diff {s.brier_diff:+.4f} [{s.brier_diff_low:+.4f}, {s.brier_diff_high:+.4f}]"
                f" -> {'promotable' if s.brier_diff_high < 0 else 'refused'}",
                flush=True,
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--markets", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--export", default=None, help="feature's URL: its real export instead of the emulation")
    args = parser.parse_args(argv)
    start = time.process_time()
    if args.export:
        from om_prediction.cli import export_rows

        rows = list(export_rows(args.export))
    else:
        rows = offline_export(args.markets, args.seed)
    print(f"{len(rows)} export rows of {len({r['market_id'] for r in rows})} markets")
    two_by_two(rows)
    print(f"{time.process_time() - start:.0f} CPU-s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
