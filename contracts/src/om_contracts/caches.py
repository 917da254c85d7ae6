"""Read-only cache interfaces: Redis entries that one service owns and writes, and that another may read in place
of a call to the owner's internal API. The owner alone writes and expires them; readers never write, and fall back to
the owner's API on a miss. Today one: the gateway reads prediction's latest prediction per market (its hot read path,
issue 5), so a cached prediction is answered without a second HTTP hop."""

from __future__ import annotations

#: The hash field holding a market's latest prediction as `PredictionMade` JSON (beside `as_of`, its features' time).
PREDICTION_LATEST_FIELD = "prediction"


def prediction_latest_key(market_id: str) -> str:
    """prediction's cache entry for a market's latest prediction (under prediction's own `prediction:` prefix)."""
    return f"prediction:latest:{market_id}"
