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
    down.add_argument("--data-dir", type=launcher.Path, default=launcher.DEFAULT_DATA_DIR)
    down.set_defaults(run=launcher.down)

    state = commands.add_parser("status", help="each service of `om up`: state, restarts, readiness, consumer lag")
    state.add_argument("--data-dir", type=launcher.Path, default=launcher.DEFAULT_DATA_DIR)
    state.set_defaults(run=launcher.status)

    letters = commands.add_parser("dead-letters", help="list dead letters, or replay them after a fix")
    from om_cli import dead_letters

    dead_letters.add_arguments(letters)

    servers = commands.add_parser("infra", help="start only Kafka, PostgreSQL and Redis, and print their URLs")
    launcher.add_server_arguments(servers)
    servers.set_defaults(run=infra)

    simulate = commands.add_parser("simulate", help="drive a running platform with simulated markets and traders")
    from om_cli.simulator.runner import add_arguments, run_from_args

    add_arguments(simulate)
    simulate.set_defaults(run=lambda args: _run_async(run_from_args(args)))

    args = parser.parse_args(argv)
    logging.basicConfig(format="om | %(message)s", level=logging.INFO)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns the summaries
    return args.run(args) or 0


def _run_async(coro: Coroutine[Any, Any, int]) -> int:
    try:
        return asyncio.run(coro)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
