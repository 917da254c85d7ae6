"""`om up` and `om down` as a user runs them: a taken port is a clear error, and stopping leaves no process."""

from __future__ import annotations

import os
import socket
import subprocess  # nosec B404  # runs fixed programs from argument lists, never a shell
import sys
import time
from pathlib import Path

import httpx
import pytest

from om_cli.credentials import auth_headers
from om_cli.launcher import process_alive
from om_cli.testing import free_ports, read_until

pytestmark = pytest.mark.e2e


def om(*args: str) -> list[str]:
    return [sys.executable, "-m", "om_cli", *args]


def descendants(pid: int) -> set[int]:
    """Every process below `pid`, from /proc (children first started their own sessions, but keep the parent)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def port_args() -> list[str]:
    return [
        "--kafka-port", str(free_ports(1)),
        "--postgres-port", str(free_ports(1)),
        "--redis-port", str(free_ports(1)),
        "--gateway-port", str(free_ports(1)),
        "--service-ports-from", str(free_ports(4)),
    ]  # fmt: skip


def test_a_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = [*port_args(), "--kafka-port", str(port), "--data-dir", str(tmp_path), "--no-simulator"]
        # bandit: the argument list is built from constants and paths this code controls; no shell
        result = subprocess.run(om("up", *args), capture_output=True, text=True, timeout=60, env=_external_free())  # nosec B603
    assert result.returncode == 1
    assert f"port {port} for the embedded kafka is already in use" in result.stdout
    assert "--kafka-port" in result.stdout


def test_up_serves_and_down_stops_every_process(tmp_path: Path) -> None:
    args = port_args()
    gateway = f"http://127.0.0.1:{args[args.index('--gateway-port') + 1]}"
    # bandit: the argument list is built from constants and paths this code controls; no shell
    launcher = subprocess.Popen(  # nosec B603
        om("up", *args, "--data-dir", str(tmp_path), "--rate", "5"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_external_free(),
    )
    try:
        output = read_until(launcher, "Dashboard", timeout_s=120)
        assert f"{gateway}/" in output
        children = descendants(launcher.pid)
        assert len(children) >= 8  # three servers and five services (PostgreSQL adds its own workers)
        key = (tmp_path / "credentials" / "admin-api-key").read_text().strip()
        assert key in output  # printed, so a new user can try writes at once
        url = f"{gateway}/api/v1/ai-analytics/analytics/system"
        assert httpx.get(url, timeout=10).status_code == 401
        system = httpx.get(url, timeout=10, headers=auth_headers(data_dir=tmp_path))
        assert system.status_code == 200 and "system_metrics" in system.json()
    finally:
        # bandit: the argument list is built from constants and paths this code controls; no shell
        down = subprocess.run(om("down", "--data-dir", str(tmp_path)), capture_output=True, text=True, timeout=90)  # nosec B603
        rest, _ = launcher.communicate(timeout=60)
    assert down.returncode == 0, down.stdout + down.stderr
    assert launcher.returncode == 0, rest
    assert "stopped everything" in rest
    deadline = time.monotonic() + 10
    while any(process_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in children if process_alive(pid)]
    assert not (tmp_path / "om.pid").exists()


def _external_free() -> dict[str, str]:
    """The environment without external servers, so `om up` starts its embedded ones."""
    env = dict(os.environ)
    for key in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "REDIS_URL"):
        env.pop(key, None)
    return env
