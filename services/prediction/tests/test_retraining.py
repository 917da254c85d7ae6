"""Retraining's triggers (`prediction retrain-loop`): a round starts once `--after-resolutions` markets resolved
since the last one, or when `--every-hours` have passed, whichever is first; and the jobs in the service's image
find the training export and the registry from the service's own environment (what the chart's CronJob sets)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from om_prediction import cli
from om_prediction.registry import Registry

SINCE = datetime(2026, 1, 1, tzinfo=UTC)


def loop_args(**overrides: Any) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_train_arguments(parser)
    args = parser.parse_args([])
    return argparse.Namespace(
        **(vars(args) | {"every_hours": 24.0, "after_resolutions": 3, "check_every_s": 300.0} | overrides)
    )


class FakeExport:
    """feature's export as `_wait_for_new_data` sees it: the markets resolved after `resolved_after`, growing by one
    market per call; `down` calls fail like a restarting feature service."""

    def __init__(self, down: int = 0) -> None:
        self.calls: list[str | None] = []
        self.down = down

    def __call__(self, url: str, *, resolved_after: str | None = None, page: int = 5000) -> list[dict[str, Any]]:
        self.calls.append(resolved_after)
        if len(self.calls) <= self.down:
            raise httpx.ConnectError("feature restarting")
        n = len(self.calls) - self.down
        return [{"market_id": f"m{i}", "as_of": "x"} for i in range(n) for _ in range(5)]  # 5 rows a market


def test_a_round_starts_once_enough_markets_resolved(monkeypatch: pytest.MonkeyPatch) -> None:
    export, slept = FakeExport(down=1), []
    monkeypatch.setattr(cli, "export_rows", export)
    monkeypatch.setattr(cli.time, "sleep", slept.append)
    cli._wait_for_new_data(loop_args(after_resolutions=3), SINCE)  # noqa: SLF001
    # one failed check (feature away), then 1, 2, 3 markets: counted by market, not by snapshot row
    assert len(export.calls) == 4 and set(export.calls) == {SINCE.isoformat()}
    assert slept == [300.0] * 3


def test_a_round_starts_on_schedule_without_resolutions(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(float(t) for t in range(0, 10_000, 100))  # each check is 100 s later
    monkeypatch.setattr(cli, "export_rows", lambda *a, **k: [])
    monkeypatch.setattr(cli.time, "monotonic", lambda: next(clock))
    slept: list[float] = []
    monkeypatch.setattr(cli.time, "sleep", slept.append)
    cli._wait_for_new_data(loop_args(every_hours=0.1, check_every_s=120.0), SINCE)  # noqa: SLF001
    assert slept and all(s <= 120.0 for s in slept)  # never sleeps past the schedule
    assert len(slept) <= 0.1 * 3600 / 100


def test_jobs_in_the_service_image_use_the_services_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The chart runs `prediction train` with the prediction component's env: PREDICTION_FEATURE_URL (its
    upstream) and the registry the service serves from (PREDICTION_MODELS_DIR); OM_* still win for `om`."""
    for name in ("OM_FEATURE_URL", "OM_MODELS_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PREDICTION_FEATURE_URL", "http://feature:8002")
    monkeypatch.setenv("PREDICTION_MODELS_DIR", str(tmp_path / "served"))
    assert loop_args().feature_url == "http://feature:8002"
    assert Registry().root == tmp_path / "served"
    monkeypatch.setenv("OM_FEATURE_URL", "http://127.0.0.1:19502")
    monkeypatch.setenv("OM_MODELS_DIR", str(tmp_path / "mine"))
    assert loop_args().feature_url == "http://127.0.0.1:19502"
    assert Registry().root == tmp_path / "mine"
