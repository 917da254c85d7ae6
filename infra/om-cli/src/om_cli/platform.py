"""Runs the five services as child processes against given infrastructure, waits until each is ready,
supervises them (a service that dies is reported and restarted with backoff) and stops them (by the PIDs it
started) in reverse order. Used by `om up`, the benchmark, the fault suite and the end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess  # nosec B404  # runs fixed programs from argument lists, never a shell
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from om_cli.credentials import GATEWAY_KEY_FILE_ENV, ensure_admin_key
from om_cli.embedded import check_port_free

# Start order: producers of what others need first; the gateway last (its readiness needs the others).
SERVICES = ("ingest", "feature", "prediction", "analytics", "gateway")


@dataclass(frozen=True)
class ServicePorts:
    gateway: int = 8000
    ingest: int = 8001
    feature: int = 8002
    prediction: int = 8003
    analytics: int = 8004

    def of(self, service: str) -> int:
        port: int = getattr(self, service)
        return port


def service_env(service: str, infra_env: dict[str, str], ports: ServicePorts) -> dict[str, str]:
    prefix = service.upper()
    env = {
        **infra_env,
        f"{prefix}_HTTP_HOST": "127.0.0.1",
        f"{prefix}_HTTP_PORT": str(ports.of(service)),
        "OTEL_SERVICE_NAME": service,
    }
    if service == "gateway":
        for upstream in ("ingest", "prediction", "analytics"):
            env[f"GATEWAY_{upstream.upper()}_URL"] = f"http://127.0.0.1:{ports.of(upstream)}"
        # Platform health reads every service's /metrics; on this loopback-only platform the gateway's is open,
        # as Compose's is (a cluster gives Prometheus a service key instead: docs/operations.md).
        env["GATEWAY_PUBLIC_METRICS"] = "true"
    if service == "analytics":  # platform health scrapes the services where they run, not at the default ports
        env["ANALYTICS_SERVICE_URLS"] = json.dumps({name: f"http://127.0.0.1:{ports.of(name)}" for name in SERVICES})
    return env


#: Pause before restarting a service that died: doubles per consecutive crash, up to the cap.
RESTART_FIRST_S, RESTART_CAP_S = 1.0, 30.0
#: A service that has run this long since its last start counts as healthy again (its backoff resets).
HEALTHY_AFTER_S = 60.0


@dataclass
class RunningService:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    #: "running", or "restarting" while waiting out the backoff after a crash
    state: str = "running"
    restarts: int = 0
    crashes_in_a_row: int = 0
    last_exit: int | None = None
    started_at: float = field(default_factory=time.monotonic)
    restart_at: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Platform:
    infra_env: dict[str, str]
    log_dir: Path
    ports: ServicePorts = field(default_factory=ServicePorts)
    extra_env: dict[str, str] = field(default_factory=dict)
    running: list[RunningService] = field(default_factory=list)
    #: Called after each background supervision round (om up writes the status file there).
    on_round: Callable[[], None] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _stopping: threading.Event = field(default_factory=threading.Event, repr=False)
    #: The development admin API key the gateway accepts (created beside the logs unless a file is named).
    admin_api_key: str | None = None

    def start(self, timeout_s: float = 60.0) -> None:
        """Start every service and wait until each is ready. A taken port fails first (PortInUse): otherwise
        whatever holds it might answer the readiness check in the service's place."""
        for name in SERVICES:
            check_port_free(self.ports.of(name), name, "choose other ports (see `om up --help`)")
        if GATEWAY_KEY_FILE_ENV not in self.extra_env:
            key_file, self.admin_api_key = ensure_admin_key(self.log_dir.parent)
            self.extra_env = {**self.extra_env, GATEWAY_KEY_FILE_ENV: str(key_file)}
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._stopping.clear()
        try:
            for name in SERVICES:
                self._spawn(name)
            deadline = time.monotonic() + timeout_s
            for service in self.running:
                self._wait_ready(service, deadline)
        except BaseException:
            self.stop()
            raise

    def _popen(self, name: str) -> tuple[subprocess.Popen[bytes], Path]:
        env = {**os.environ, **service_env(name, self.infra_env, self.ports), **self.extra_env}
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            # bandit: the argument list is built from constants and paths this code controls; no shell
            process = subprocess.Popen(  # nosec B603
                [sys.executable, "-m", f"om_{name}"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches the launcher only; it stops services in order
            )
        return process, log_path

    def _spawn(self, name: str) -> None:
        process, log_path = self._popen(name)
        self.running.append(RunningService(name, self.ports.of(name), process, log_path))

    def service(self, name: str) -> RunningService:
        return next(s for s in self.running if s.name == name)

    def restart(self, name: str, *, timeout_s: float = 60.0) -> None:
        """Start a service again that was stopped or killed (by a test or a fault), and wait until it is ready."""
        service = self.service(name)
        if service.process.poll() is None:
            raise RuntimeError(f"{name} is still running (pid {service.process.pid})")
        service.process, service.log_path = self._popen(name)
        service.state, service.started_at = "running", time.monotonic()
        self._wait_ready(service, time.monotonic() + timeout_s)

    def supervise(self, report: Callable[[str], None] = print) -> None:
        """One supervision round: report services that died, and restart those whose backoff is over."""
        now = time.monotonic()
        with self._lock:
            for service in self.running:
                if service.state == "running":
                    if service.process.poll() is None:
                        if now - service.started_at > HEALTHY_AFTER_S:
                            service.crashes_in_a_row = 0
                        continue
                    service.last_exit = service.process.returncode
                    delay = min(RESTART_CAP_S, RESTART_FIRST_S * 2**service.crashes_in_a_row)
                    service.crashes_in_a_row += 1
                    service.state, service.restart_at = "restarting", now + delay
                    report(
                        f"{service.name} exited with code {service.last_exit}; restarting in {delay:.0f} s "
                        f"(see {service.log_path})"
                    )
                elif service.state == "restarting" and now >= service.restart_at:
                    service.process, service.log_path = self._popen(service.name)
                    service.state, service.started_at = "running", now
                    service.restarts += 1
                    report(f"{service.name} restarted (pid {service.process.pid}, restart #{service.restarts})")

    def supervise_in_background(self, report: Callable[[str], None] = print, interval_s: float = 1.0) -> None:
        """Supervise from a daemon thread until `stop()`; `on_round` (if set) runs after each round."""

        def loop() -> None:
            while not self._stopping.wait(interval_s):
                try:
                    self.supervise(report)
                    if self.on_round is not None:
                        self.on_round()
                except Exception as exc:  # supervision must outlive a bad round
                    report(f"supervisor: {type(exc).__name__}: {exc}")

        threading.Thread(target=loop, name="om-supervisor", daemon=True).start()

    def status(self) -> list[dict[str, object]]:
        """Each service's process: name, pid, state, restarts, last exit code, URL."""
        return [
            {
                "name": s.name,
                "pid": s.process.pid,
                "state": s.state if s.process.poll() is None or s.state == "restarting" else "exited",
                "restarts": s.restarts,
                "last_exit": s.last_exit,
                "url": s.url,
            }
            for s in self.running
        ]

    @staticmethod
    def _wait_ready(service: RunningService, deadline: float) -> None:
        while True:
            if service.process.poll() is not None:
                tail = service.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{service.name} exited with code {service.process.returncode}:\n{tail}")
            try:
                if httpx.get(f"{service.url}/ready", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{service.name} not ready in time; see {service.log_path}")
            time.sleep(0.2)

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports.of(service)}"

    def stop(self, timeout_s: float = 15.0) -> None:
        self._stopping.set()
        with self._lock:
            self._stop_all(timeout_s)

    def _stop_all(self, timeout_s: float) -> None:
        for service in reversed(self.running):
            if service.process.poll() is None:
                service.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for service in reversed(self.running):
            try:
                service.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                service.process.kill()
                service.process.wait()
        self.running.clear()
