"""prediction's own Prometheus series (on the service's /metrics, beside the runtime's HTTP and consumer ones):
predictions published per model version, and each version's live accuracy on resolved markets against the price."""

from __future__ import annotations

from collections import Counter as Tally
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from om_contracts import PredictionMade


class PredictionMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.predictions = Counter(
            "prediction_predictions",
            "Predictions published, by model version; final = made when the market resolved or was cancelled",
            ["model_version", "final"],
            registry=registry,
        )
        self.live_markets = Gauge(
            "prediction_live_markets",
            "Markets resolved YES/NO whose last prediction came from this model version",
            ["model_version"],
            registry=registry,
        )
        self.live_brier = Gauge(
            "prediction_live_brier",
            "Brier score of this model version's last prediction on each resolved market",
            ["model_version"],
            registry=registry,
        )
        self.live_market_brier = Gauge(
            "prediction_live_market_brier",
            "Brier score of the market price at the same moments (the baseline the model must beat)",
            ["model_version"],
            registry=registry,
        )

    def published(self, predictions: list[PredictionMade]) -> None:
        for (version, final), n in Tally((p.model_version, p.final) for p in predictions).items():
            self.predictions.labels(version, "true" if final else "false").inc(n)

    def live(self, accuracy: dict[str, dict[str, Any]]) -> None:
        for version, s in accuracy.items():
            self.live_markets.labels(version).set(s["markets"])
            self.live_brier.labels(version).set(s["brier"])
            self.live_market_brier.labels(version).set(s["market_brier"])
