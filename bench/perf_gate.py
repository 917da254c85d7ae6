"""Compare a Locust run with the last kept baseline and fail on a large regression (CI's performance job).

    python bench/perf_gate.py current_stats.csv [baseline.json] --write summary.json

Reads Locust's `<prefix>_stats.csv` (the "Aggregated" row), writes its summary (requests/s, p95 ms, failure
ratio) as JSON for the next run to compare with, and exits 1 when, against the baseline, throughput fell or p95
latency rose by more than --tolerance (default 50 %: CI runners are noisy), or the failure ratio passed 1 %.
Without a baseline it only records the summary.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path


def summarize(stats_csv: Path) -> dict[str, float]:
    with stats_csv.open(newline="", encoding="utf-8") as f:
        row = next(r for r in csv.DictReader(f) if r["Name"] == "Aggregated")
    requests = float(row["Request Count"])
    return {
        "requests_per_s": float(row["Requests/s"]),
        "p95_ms": float(row["95%"]),
        "failure_ratio": float(row["Failure Count"]) / requests if requests else 1.0,
    }


def regressions(current: dict[str, float], baseline: dict[str, float], tolerance: float) -> list[str]:
    found = []
    if current["failure_ratio"] > 0.01:
        found.append(f"failure ratio {current['failure_ratio']:.2%} is above 1 %")
    if current["requests_per_s"] < baseline["requests_per_s"] * (1 - tolerance):
        found.append(f"throughput {current['requests_per_s']:.1f}/s fell from {baseline['requests_per_s']:.1f}/s")
    if current["p95_ms"] > baseline["p95_ms"] * (1 + tolerance):
        found.append(f"p95 {current['p95_ms']:.0f} ms rose from {baseline['p95_ms']:.0f} ms")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stats_csv", type=Path)
    parser.add_argument("baseline", type=Path, nargs="?")
    parser.add_argument("--write", type=Path, help="write this run's summary here")
    parser.add_argument("--tolerance", type=float, default=0.5)
    args = parser.parse_args(argv)
    current = summarize(args.stats_csv)
    print("this run:", json.dumps(current))
    if args.write:
        args.write.write_text(json.dumps(current, indent=2) + "\n", encoding="utf-8")
    if args.baseline is None or not args.baseline.is_file():
        print("no baseline kept yet: nothing to compare")
        return 0
    baseline = json.loads(args.baseline.read_text(encoding="utf-8"))
    print("baseline:", json.dumps(baseline))
    found = regressions(current, baseline, args.tolerance)
    for problem in found:
        print("regression:", problem)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
