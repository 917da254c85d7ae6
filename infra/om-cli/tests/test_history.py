"""Simulated history: believable dynamics with the committed defaults, reproducible, and the generic format
round-trips through JSON lines and CSV."""

from __future__ import annotations

import math
import random
import statistics
from pathlib import Path

from om_cli.__main__ import main
from om_cli.history.format import (
    MarketRecord,
    ResolutionRecord,
    TradeRecord,
    read_history,
    write_history,
)
from om_cli.history.simulated import simulate_history
from om_cli.history.stats import history_stats
from om_cli.simulator.agents import NoiseStrategy
from om_cli.simulator.lmsr import LMSR


def test_default_dynamics_are_believable_over_500_markets() -> None:
    stats = history_stats(simulate_history(500, seed=1))
    assert stats.markets == 500
    assert stats.median_step <= 0.02
    assert stats.p99_step <= 0.10
    assert 0.06 <= stats.midlife_brier <= 0.12


def test_same_seed_same_history_and_every_market_settles() -> None:
    a = list(simulate_history(30, seed=5))
    b = list(simulate_history(30, seed=5))
    assert a == b
    markets = {r.market_id for r in a if isinstance(r, MarketRecord)}
    settled = {r.market_id for r in a if isinstance(r, ResolutionRecord)}
    assert len(markets) == 30 and settled == markets
    times = {r.market_id: r.created_at for r in a if isinstance(r, MarketRecord)}
    closes = {r.market_id: r.closed_at for r in a if isinstance(r, ResolutionRecord)}
    for t in (r for r in a if isinstance(r, TradeRecord)):
        assert times[t.market_id] <= t.executed_at <= closes[t.market_id]


def test_noise_alone_moves_the_price_like_a_martingale() -> None:
    rng = random.Random(3)
    noise = NoiseStrategy(longshot_bias=0.0)
    for p0 in (0.1, 0.5, 0.85):
        moves = []
        for _ in range(4000):
            maker = LMSR.with_price(300.0, p0)
            amount = 10.0
            up = 1.0 if rng.random() < noise.chance_of_yes(maker, amount) else 0.0
            maker.spend("YES" if up else "NO", amount)
            moves.append(maker.price() - p0)
        sd = statistics.pstdev(moves) / math.sqrt(len(moves))
        assert abs(statistics.fmean(moves)) < 4 * sd + 1e-4


def test_longshot_bias_tilts_noise_towards_the_cheap_side() -> None:
    maker = LMSR.with_price(300.0, 0.1)
    assert NoiseStrategy(longshot_bias=0.1).chance_of_yes(maker, 10.0) > NoiseStrategy(longshot_bias=0.0).chance_of_yes(
        maker, 10.0
    )


def test_generic_format_round_trips(tmp_path: Path) -> None:
    records = list(simulate_history(5, seed=2))
    for fmt in ("jsonl", "csv"):
        write_history(tmp_path / fmt, records, fmt)  # type: ignore[arg-type]
        back = read_history(tmp_path / fmt)
        flat = sorted(map(repr, (r for rs in back.values() for r in rs)))
        assert flat == sorted(map(repr, records))


def test_om_simulate_history_writes_a_folder(tmp_path: Path, capsys) -> None:
    assert main(["simulate", "--history", "20", "--out", str(tmp_path / "h"), "--seed", "4"]) == 0
    back = read_history(tmp_path / "h")
    assert len(back["markets"]) == 20 and len(back["resolutions"]) == 20
    assert "Brier" in capsys.readouterr().out
