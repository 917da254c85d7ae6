"""`prediction train | models | retrain-loop` (and `om train`, `om models`, which call these functions).

Training reads the feature service's export (interfaces item 3) page by page, or rows given in-process.
Promotion and rollback publish `model.lifecycle.v1` when a broker answers; serving also watches the registry.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from om_prediction.registry import PromotionRule, Registry, RegistryError

log = logging.getLogger("om_prediction.cli")
DEFAULT_FEATURE_URL = "http://127.0.0.1:8002"
MODELS_DIR_HELP = "registry folder (default $OM_MODELS_DIR, else $PREDICTION_MODELS_DIR)"


def export_rows(base_url: str, *, resolved_after: str | None = None, page: int = 5000) -> Iterator[dict[str, Any]]:
    """Every snapshot row of feature's training export, following its cursor."""
    import httpx

    cursor = None
    with httpx.Client(base_url=base_url, timeout=60.0) as client:
        while True:
            params: dict[str, Any] = {"limit": page}
            if resolved_after:
                params["resolved_after"] = resolved_after
            if cursor:
                params["cursor"] = cursor
            response = client.get("/v1/training/snapshots", params=params)
            response.raise_for_status()
            body = response.json()
            yield from body["items"]
            cursor = body.get("next_cursor")
            if not cursor:
                return


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models-dir", type=Path, default=None, help=MODELS_DIR_HELP)
    sub = parser.add_subparsers(dest="models_command", required=True)
    sub.add_parser("list", help="every version with state and held-out metrics")
    show = sub.add_parser("show", help="one version's manifest")
    show.add_argument("version")
    promote = sub.add_parser("promote", help="make a candidate the production model (if the rule allows)")
    promote.add_argument("version")
    promote.add_argument("--max-upper-vs-market", type=float, default=0.0)
    promote.add_argument("--max-worse-than-production", type=float, default=0.001)
    promote.add_argument("--kafka", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    rollback = sub.add_parser("rollback", help="production goes back to the previous version")
    rollback.add_argument("--kafka", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))


def run_models(args: argparse.Namespace) -> int:
    registry = Registry(args.models_dir)
    try:
        if args.models_command == "list":
            versions = registry.versions()
            if not versions:
                print(f"no models in {registry.root}")
            for v in versions:
                m = v["metrics"]
                print(
                    f"{v['version']:<24} {v['state']:<10} Brier {m['brier']:.4f} vs market {m['market_brier']:.4f} "
                    f"diff {m['brier_diff']:+.4f} [{m['brier_diff_low']:+.4f}, {m['brier_diff_high']:+.4f}]"
                )
        elif args.models_command == "show":
            print(json.dumps(registry.get(args.version), indent=2))
        elif args.models_command == "promote":
            rule = PromotionRule(args.max_upper_vs_market, args.max_worse_than_production)
            entry = registry.promote(args.version, rule)
            print(f"{entry['version']} is now production (was {entry.get('previous') or 'the baseline'})")
            _announce(args.kafka, entry)
        else:
            entry = registry.rollback()
            print(f"{entry['version']} is production again")
            _announce(args.kafka, entry)
    except RegistryError as exc:
        print(f"error: {exc}")
        return 1
    return 0


def _announce(bootstrap: str, entry: dict[str, Any]) -> None:
    """Publish model.lifecycle.v1; without a broker, serving still sees the registry change within its poll."""
    from om_contracts import ModelLifecycleChanged
    from om_contracts.topics import MODEL_LIFECYCLE
    from om_runtime.kafka import EventPublisher, create_broker, ensure_topics

    async def send() -> None:
        await ensure_topics(bootstrap, [MODEL_LIFECYCLE])
        broker = create_broker(bootstrap, client_id="om-models")
        await broker.start()
        try:
            await EventPublisher(broker).publish(
                MODEL_LIFECYCLE,
                ModelLifecycleChanged(
                    occurred_at=datetime.now(UTC),
                    producer="om-models",
                    model_version=entry["version"],
                    state="production",
                    previous_version=entry.get("previous"),
                    checksum=entry["checksum"],
                ),
            )
        finally:
            await broker.stop()

    try:
        asyncio.run(asyncio.wait_for(send(), timeout=10))
        print("announced on model.lifecycle.v1")
    except Exception as exc:  # noqa: BLE001 - no broker is fine: serving polls the registry too
        print(f"no broker at {bootstrap} ({type(exc).__name__}); running services pick the change up by polling")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    # PREDICTION_FEATURE_URL: what the chart gives the prediction image (its upstream), where the CronJob runs this
    feature_url = os.environ.get("OM_FEATURE_URL") or os.environ.get("PREDICTION_FEATURE_URL") or DEFAULT_FEATURE_URL
    parser.add_argument("--feature-url", default=feature_url)
    parser.add_argument("--resolved-after", default=None, help="only markets resolved after this ISO time")
    parser.add_argument("--models-dir", type=Path, default=None, help=MODELS_DIR_HELP)
    parser.add_argument("--seed", type=int, default=0)


def run_train(args: argparse.Namespace, rows: Any = None, source: str | None = None) -> int:
    from om_prediction.model import TrainParams
    from om_prediction.training.pipeline import TrainingError, train

    if rows is None:
        rows, source = export_rows(args.feature_url, resolved_after=args.resolved_after), args.feature_url
    try:
        entry = train(rows, Registry(args.models_dir), TrainParams(seed=args.seed), source=source or "")
    except TrainingError as exc:
        print(f"error: {exc}")
        return 1
    m = entry["metrics"]
    print(
        f"candidate {entry['version']}: Brier {m['brier']:.4f} vs market {m['market_brier']:.4f}, "
        f"diff {m['brier_diff']:+.4f} [95% {m['brier_diff_low']:+.4f}, {m['brier_diff_high']:+.4f}]"
    )
    refusal = PromotionRule().refusal(entry, Registry(args.models_dir).production())
    print("promotable" if refusal is None else f"not promotable: {refusal}")
    print(f"report: {entry['report']}")
    return 0


def run_retrain_loop(args: argparse.Namespace) -> int:
    """Retrain every `--every-hours`, or sooner once `--after-resolutions` new markets resolved; promote by rule.
    With `--once` (a CronJob run), train at once and stop."""
    registry = Registry(args.models_dir)
    last = datetime.now(UTC)
    while True:
        if not args.once:
            _wait_for_new_data(args, last)
        started = datetime.now(UTC)
        if _train_quietly(args) == 0:
            candidate = registry.versions()[-1]
            try:
                registry.promote(candidate["version"])
                _announce(args.kafka, registry.get(candidate["version"]))
            except RegistryError as exc:
                log.warning("%s", exc)
        last = started
        if args.once:
            return 0


def _wait_for_new_data(args: argparse.Namespace, since: datetime) -> None:
    """Until `--every-hours` passed or `--after-resolutions` markets resolved after `since` (by event time)."""
    import httpx

    due = time.monotonic() + args.every_hours * 3600
    while time.monotonic() < due:
        try:
            rows = export_rows(args.feature_url, resolved_after=since.isoformat(), page=5000)
            if len({r["market_id"] for r in rows}) >= args.after_resolutions:
                return
        except httpx.HTTPError as exc:  # feature restarting: ask again at the next check
            log.warning("feature export at %s unavailable (%s)", args.feature_url, exc)
        time.sleep(min(args.check_every_s, max(0.0, due - time.monotonic())))


def _train_quietly(args: argparse.Namespace) -> int:
    """One retraining; a feature service that is away is a failed round, not the end of the loop."""
    import httpx

    try:
        return run_train(args)
    except httpx.HTTPError as exc:
        log.warning("retraining skipped: feature export at %s unavailable (%s)", args.feature_url, exc)
        return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="prediction", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the service (the default)")
    add_train_arguments(sub.add_parser("train", help="train a candidate from feature's export"))
    add_model_arguments(sub.add_parser("models", help="list, show, promote, roll back models"))
    loop = sub.add_parser("retrain-loop", help="retrain on a schedule and after N resolutions")
    add_train_arguments(loop)
    loop.add_argument("--every-hours", type=float, default=24.0)
    loop.add_argument("--after-resolutions", type=int, default=200)
    loop.add_argument("--check-every-s", type=float, default=300.0)
    loop.add_argument("--kafka", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    loop.add_argument("--once", action="store_true", help="train once and stop (a CronJob run)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "train":
        return run_train(args)
    if args.command == "models":
        return run_models(args)
    if args.command == "retrain-loop":
        return run_retrain_loop(args)
    from om_prediction.__main__ import serve_main

    serve_main()
    return 0
