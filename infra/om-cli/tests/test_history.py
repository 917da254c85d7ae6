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


def test_late_information_is_calibrated_and_sharpens_mostly_near_close() -> None:
    """`information` and `late_exponent` (docs/history-formats.md): the informed probability starts at the prior
    truth and learns the fate as information * f**late_exponent accrues. With the committed defaults (10, 2) it
    is calibrated at every moment (a martingale: its mean stays the share of YES) and gains more in the second
    half of the life than in the first; with `information` 0 it never moves."""
    from datetime import UTC, datetime

    from om_cli.simulator.world import WorldConfig, draw_market

    config, rng, start = WorldConfig(), random.Random(8), datetime(2025, 1, 1, tzinfo=UTC)
    markets = [draw_market(rng, config, f"m{i}", start) for i in range(3000)]
    markets = [m for m in markets if m.fate in ("YES", "NO")]
    y = [1.0 if m.fate == "YES" else 0.0 for m in markets]
    briers, means = [], []
    for f in (0.0, 0.5, 1.0):
        beliefs = [m.reveal(m.created_at + (m.trade_until - m.created_at) * f, 10.0, 2.0) for m in markets]
        briers.append(statistics.fmean((b - o) ** 2 for b, o in zip(beliefs, y, strict=True)))
        means.append(statistics.fmean(beliefs))
    assert briers[0] > briers[1] > briers[2]
    assert briers[1] - briers[2] > briers[0] - briers[1]  # late: most is learnt in the second half
    assert all(abs(mean - statistics.fmean(y)) < 0.03 for mean in means)  # calibrated on average
    quiet = draw_market(random.Random(1), config, "q", start)
    assert quiet.reveal(quiet.trade_until, 0.0, 2.0) == quiet.truth
