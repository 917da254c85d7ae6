"""Runs the five services as child processes against given infrastructure, waits until each is ready,
and stops them (by the PIDs it started) in reverse order. Used by `om up` and by the end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess  # nosec B404  # runs fixed programs from argument lists, never a shell
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

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
        return getattr(self, service)


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
    return env


@dataclass
class RunningService:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

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

    def start(self, timeout_s: float = 60.0) -> None:
        """Start every service and wait until each is ready. A taken port fails first (PortInUse): otherwise
        whatever holds it might answer the readiness check in the service's place."""
        for name in SERVICES:
            check_port_free(self.ports.of(name), name, "choose other ports (see `om up --help`)")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            for name in SERVICES:
                self._spawn(name)
            deadline = time.monotonic() + timeout_s
            for service in self.running:
                self._wait_ready(service, deadline)
        except BaseException:
            self.stop()
            raise

    def _spawn(self, name: str) -> None:
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
        self.running.append(RunningService(name, self.ports.of(name), process, log_path))

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
