"""Sentiment of a signal's text, in [-1, 1], for signals whose source did not score them.

VADER, a lexicon and rules tuned to social-media text, gives the compound score. Its lexicon ships inside the
package, so nothing is downloaded; it is read once, on first use.
"""

from __future__ import annotations

from functools import cache

# vaderSentiment ships no type information (no py.typed, no stubs package)
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer  # type: ignore[import-untyped]


@cache
def _analyzer() -> SentimentIntensityAnalyzer:
    return SentimentIntensityAnalyzer()


def score(text: str) -> float:
    """-1 (most negative) to 1 (most positive); 0 for neutral or unknown words."""
    return float(_analyzer().polarity_scores(text)["compound"])
