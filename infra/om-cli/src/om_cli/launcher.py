"""`om up`: the whole platform on one machine, with one command.

Starts Kafka, PostgreSQL and Redis (embedded unless the environment names them), starts the five services
(each creates its topics and migrates its schema), prints where to look, and drives them with the market
simulator until Ctrl-C or `om down`. Everything started is stopped again, in reverse order, by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess  # nosec B404  # runs a fixed program from an argument list, never a shell
import sys
import time
from pathlib import Path

from om_cli.credentials import GATEWAY_KEY_FILE_ENV, ensure_admin_key
from om_cli.embedded import EmbeddedServer, PortInUse, Ports, ServerFailed, start_infrastructure
from om_cli.platform import SERVICES, Platform, ServicePorts

DEFAULT_DATA_DIR = Path(os.environ.get("OM_DATA_DIR", ".om"))


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="local state (default .om/)")
    parser.add_argument("--kafka-port", type=int, default=int(os.environ.get("OM_KAFKA_PORT", 9092)))
    parser.add_argument("--postgres-port", type=int, default=int(os.environ.get("OM_POSTGRES_PORT", 54320)))
    parser.add_argument("--redis-port", type=int, default=int(os.environ.get("OM_REDIS_PORT", 63790)))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_server_arguments(parser)
    parser.add_argument("--keep-data", action="store_true", help="keep PostgreSQL data from the previous run")
    parser.add_argument("--gateway-port", type=int, default=int(os.environ.get("OM_GATEWAY_PORT", 8000)))
    parser.add_argument(
        "--service-ports-from",
        type=int,
        default=int(os.environ.get("OM_SERVICE_PORTS_FROM", 8001)),
        help="first of four consecutive ports for ingest, feature, prediction, analytics",
    )
    parser.add_argument("--no-simulator", action="store_true", help="start the platform without simulated traffic")
    parser.add_argument("--no-retrain", action="store_true", help="do not run the model retraining loop")
    parser.add_argument("--rate", type=float, default=10.0, help="simulated trades per second")
    parser.add_argument("--markets", type=int, default=8, help="simulated open markets")
    parser.add_argument("--seed", type=int, default=None, help="simulator seed (default: a new one each run)")


def say(message: str) -> None:
    print(f"om | {message}", flush=True)


def _pid_file(data_dir: Path) -> Path:
    return data_dir / "om.pid"


def _claim_pid_file(data_dir: Path) -> Path:
    path = _pid_file(data_dir)
    if path.exists():
        pid = int(path.read_text().strip() or 0)
        if pid and process_alive(pid):
            raise SystemExit(f"om up is already running (pid {pid}); stop it with `make down`")
    data_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(str(os.getpid()))
    return path


def process_alive(pid: int) -> bool:
    """Whether `pid` still runs (a zombie, exited but not yet reaped by its parent, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def down(args: argparse.Namespace) -> int:
    path = _pid_file(args.data_dir)
    if not path.exists() or not process_alive(pid := int(path.read_text().strip() or 0)):
        say("nothing is running")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    say("stopped" if not process_alive(pid) else f"pid {pid} is still stopping; see {args.data_dir}/logs")
    return 0


def up(args: argparse.Namespace) -> int:
    data_dir: Path = args.data_dir.resolve()
    pid_file = _claim_pid_file(data_dir)
    # Tansu keeps events in memory only, so state from an earlier run would not match Kafka's: start clean.
    if not args.keep_data:
        for sub in ("kafka", "postgres", "redis", "logs"):
            shutil.rmtree(data_dir / sub, ignore_errors=True)
    # SIGTERM (from `om down`) stops as gracefully as Ctrl-C.
    signal.signal(signal.SIGTERM, interrupt)
    infra = platform = retrain = None
    try:
        ports = Ports(args.kafka_port, args.postgres_port, args.redis_port)
        infra = start_infrastructure(data_dir, ports, on_start=_announce)
        first = args.service_ports_from
        service_ports = ServicePorts(args.gateway_port, first, first + 1, first + 2, first + 3)
        key_file, admin_key = ensure_admin_key(data_dir)
        extra = {GATEWAY_KEY_FILE_ENV: str(key_file), "GATEWAY_PUBLIC_DOCS": "true"}  # a development platform
        platform = Platform(infra.env(), data_dir / "logs", service_ports, extra_env=extra, admin_api_key=admin_key)
        say(f"starting {', '.join(SERVICES)} (logs in {data_dir / 'logs'})")
        platform.start()
        if not args.no_retrain:
            retrain = _start_retrain_loop(platform, infra.env(), data_dir / "logs")
        status_file = _status_file(data_dir)
        platform.on_round = lambda: _write_status(status_file, platform, infra.env())
        platform.supervise_in_background(report=say)
        _print_urls(platform, infra.env(), key_file)
        if args.no_simulator:
            say("running without simulator; Ctrl-C to stop")
            while True:
                time.sleep(3600)
        asyncio.run(_simulate(platform.url("gateway"), args, admin_key))
        say("simulation finished; Ctrl-C to stop")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        say("stopping…")
    except (PortInUse, ServerFailed, TimeoutError, RuntimeError) as exc:  # RuntimeError: a service exited
        say(f"error: {exc}")
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the cleanup
        if retrain:
            retrain.terminate()
            retrain.wait(15)
        if platform:
            platform.stop()
        if infra:
            infra.stop()
        pid_file.unlink(missing_ok=True)
        _status_file(data_dir).unlink(missing_ok=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        say("stopped everything")
    return 0


def _status_file(data_dir: Path) -> Path:
    return data_dir / "status.json"


def _write_status(path: Path, platform: Platform, env: dict[str, str]) -> None:
    body = {"updated_at": time.time(), "launcher_pid": os.getpid(), "services": platform.status(), "infra": env}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body, indent=2))
    tmp.replace(path)  # readers never see half a file


def consumer_lag(metrics_text: str) -> int | None:
    """The sum of `om_consumer_lag` samples in a Prometheus text page (None: the service consumes nothing)."""
    from prometheus_client.parser import text_string_to_metric_families

    samples = [
        sample.value
        for family in text_string_to_metric_families(metrics_text)
        if family.name == "om_consumer_lag"
        for sample in family.samples
    ]
    return int(sum(samples)) if samples else None


def status(args: argparse.Namespace) -> int:
    """`om status`: each process of a running `om up`, its state, restarts, readiness and consumer lag."""
    import httpx

    path = _status_file(args.data_dir.resolve())
    if not path.exists():
        say("nothing is running (no status file); start the platform with `make up`")
        return 1
    body = json.loads(path.read_text())
    age = time.time() - body["updated_at"]
    rows = [("service", "pid", "state", "restarts", "ready", "consumer lag")]
    for service in body["services"]:
        ready, lag = "-", "-"
        if service["state"] == "running":
            try:
                reply = httpx.get(f"{service['url']}/ready", timeout=2.0)
                ready = (
                    "yes"
                    if reply.status_code == 200
                    else "no: " + ", ".join(f"{k} {v}" for k, v in reply.json().get("checks", {}).items() if v != "ok")
                )
                value = consumer_lag(httpx.get(f"{service['url']}/metrics", timeout=2.0).text)
                lag = "-" if value is None else str(value)
            except httpx.HTTPError as exc:
                ready = f"no answer ({type(exc).__name__})"
        exited = f" (last exit {service['last_exit']})" if service["last_exit"] is not None else ""
        rows.append(
            (service["name"], str(service["pid"]), service["state"] + exited, str(service["restarts"]), ready, lag)
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if age > 10:
        say(f"warning: the status file is {age:.0f} s old; is `om up` (pid {body['launcher_pid']}) still running?")
    return 0


def interrupt(signum: int, frame: object) -> None:
    """SIGTERM handler: stop as gracefully as on Ctrl-C."""
    raise KeyboardInterrupt


def _announce(server: EmbeddedServer) -> None:
    say(f"{server.name:<8} embedded, {server.url}")


def _start_retrain_loop(platform: Platform, env: dict[str, str], log_dir: Path) -> subprocess.Popen[bytes]:
    """`prediction retrain-loop` beside the services: retrains daily or after 200 new resolutions from feature's
    export; a candidate is promoted only by the registry's rule (docs/prediction.md). Log: logs/retrain.log."""
    command = [sys.executable, "-m", "om_prediction", "retrain-loop", "--feature-url", platform.url("feature")]
    with open(log_dir / "retrain.log", "ab") as log:
        # bandit: the argument list is built from constants and URLs this code controls; no shell
        return subprocess.Popen(  # nosec B603
            [*command, "--kafka", env["KAFKA_BOOTSTRAP_SERVERS"]],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the launcher only; it stops the loop
        )


def _print_urls(platform: Platform, env: dict[str, str], key_file: Path) -> None:
    gateway = platform.url("gateway")
    ws = gateway.replace("http://", "ws://")
    lines = [
        f"Dashboard    {gateway}/#key={platform.admin_api_key}",
        f"REST API     {gateway}/api/v1   (docs: {gateway}/docs)",
        f"WebSocket    {ws}/api/v1/ai-analytics/ws/analytics/<client_id>",
        f"Admin key    {platform.admin_api_key}   (saved in {key_file})",
        "             send it as: Authorization: Bearer <key>",
        f"Kafka        {env['KAFKA_BOOTSTRAP_SERVERS']}",
        f"PostgreSQL   {env['DATABASE_URL']}",
        f"Redis        {env['REDIS_URL']}",
        *(f"{s.name:<12} {s.url}  (internal)" for s in platform.running if s.name != "gateway"),
    ]
    width = max(map(len, lines))
    print(
        "\n┌" + "─" * (width + 2) + "┐",
        *(f"│ {line:<{width}} │" for line in lines),
        "└" + "─" * (width + 2) + "┘\n",
        sep="\n",
        flush=True,
    )


async def _simulate(gateway_url: str, args: argparse.Namespace, api_key: str) -> None:
    from om_cli.simulator.runner import simulate

    seed = args.seed if args.seed is not None else int(time.time())
    say(f"simulator: {args.markets} markets, {args.rate:g} trades/s, seed {seed}")
    with contextlib.suppress(asyncio.CancelledError):
        await simulate(gateway_url, rate=args.rate, markets=args.markets, seed=seed, duration_s=None, api_key=api_key)
