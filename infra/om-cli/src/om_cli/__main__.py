"""The `om` command: run the platform on one machine, drive it with simulated markets, or start only servers."""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import signal
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from om_cli import launcher


def infra(args: argparse.Namespace) -> int:
    """Start only Kafka, PostgreSQL and Redis, print the environment to reach them, wait for Ctrl-C."""
    from om_cli.embedded import PortInUse, Ports, ServerFailed, start_infrastructure

    data_dir = args.data_dir.resolve() / "infra"
    shutil.rmtree(data_dir, ignore_errors=True)  # the broker starts empty, so the database must too
    signal.signal(signal.SIGTERM, launcher.interrupt)
    try:
        servers = start_infrastructure(data_dir, Ports(args.kafka_port, args.postgres_port, args.redis_port))
    except (PortInUse, ServerFailed) as exc:
        launcher.say(f"error: {exc}")
        return 1
    try:
        for key, value in servers.env().items():
            print(f"export {key}={value}")
        print("# paste these lines into another shell; Ctrl-C here stops the servers", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        servers.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="om", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="run everything: servers, five services, simulator")
    launcher.add_arguments(up)
    up.set_defaults(run=launcher.up)

    down = commands.add_parser("down", help="stop what `om up` started")
    down.add_argument("--data-dir", type=Path, default=launcher.DEFAULT_DATA_DIR)
    down.set_defaults(run=launcher.down)

    state = commands.add_parser("status", help="each service of `om up`: state, restarts, readiness, consumer lag")
    state.add_argument("--data-dir", type=Path, default=launcher.DEFAULT_DATA_DIR)
    state.set_defaults(run=launcher.status)

    letters = commands.add_parser("dead-letters", help="list dead letters, or replay them after a fix")
    from om_cli import dead_letters

    dead_letters.add_arguments(letters)

    servers = commands.add_parser("infra", help="start only Kafka, PostgreSQL and Redis, and print their URLs")
    launcher.add_server_arguments(servers)
    servers.set_defaults(run=infra)

    simulate = commands.add_parser("simulate", help="drive a running platform with simulated markets and traders")
    from om_cli.simulator.runner import add_arguments, run_from_args, write_history_from_args

    add_arguments(simulate)
    simulate.set_defaults(
        run=lambda args: write_history_from_args(args) if args.history else _run_async(run_from_args(args))
    )

    from om_prediction import cli as prediction_cli

    train = commands.add_parser("train", help="train a candidate model (from a history folder or feature's export)")
    prediction_cli.add_train_arguments(train)
    train.add_argument("--history", type=Path, default=None, help="train offline from this history folder")
    train.set_defaults(run=_train)

    models = commands.add_parser("models", help="list, show, promote or roll back trained models")
    prediction_cli.add_model_arguments(models)
    models.set_defaults(run=prediction_cli.run_models)

    importer = commands.add_parser(
        "import", help="load history (generic format, or `manifold PATH`) into a running platform, idempotently"
    )
    importer.add_argument("what", nargs="+", metavar="[manifold] PATH", help="a history folder, or manifold PATH")
    importer.add_argument("--url", default=None, help="gateway URL (default $OM_API_URL or http://127.0.0.1:8000)")
    importer.add_argument("--api-key", default=None, help="API key (default $OM_API_KEY)")
    importer.add_argument(
        "--concurrency", type=int, default=8, help="market creations and settlements sent at once (default 8)"
    )
    importer.add_argument("--restart", action="store_true", help="forget the checkpoint and check every record again")
    importer.set_defaults(run=_import)

    args = parser.parse_args(argv)
    logging.basicConfig(format="om | %(message)s", level=logging.INFO)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns the summaries
    return args.run(args) or 0


def _import(args: argparse.Namespace) -> int:
    from om_cli.history.importer import run_from_args as import_from_args

    return import_from_args(args)


def _train(args: argparse.Namespace) -> int:
    from om_prediction import cli as prediction_cli

    if args.history is None:
        return prediction_cli.run_train(args)
    from om_cli.history.format import read_history
    from om_cli.history.offline_features import snapshot_rows

    history = read_history(args.history)
    records = [r for kind in history.values() for r in kind]
    return prediction_cli.run_train(args, snapshot_rows(records, seed=args.seed), f"history {args.history}")


def _run_async(coro: Coroutine[Any, Any, int]) -> int:
    try:
        return asyncio.run(coro)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
