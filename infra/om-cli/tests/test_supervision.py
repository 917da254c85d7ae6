"""`om up` supervision with real child processes: a service that dies is reported, restarted after its backoff,
and counted; the status file and `om status` say so; consumer lag is read from a service's metrics page."""

from __future__ import annotations

import json
import subprocess  # nosec B404  # runs fixed programs from argument lists, never a shell
import sys
import time
from pathlib import Path

from om_cli import launcher
from om_cli.platform import SERVICES, Platform, RunningService, ServicePorts, service_env


class ShortLived(Platform):
    """Runs a tiny Python process per service instead of the service itself (the supervision is what is tested)."""

    script = "import time; time.sleep(0.2)"

    def _popen(self, name: str) -> tuple[subprocess.Popen[bytes], Path]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # this interpreter running the test's own script, no shell
        return subprocess.Popen([sys.executable, "-c", self.script]), self.log_dir / f"{name}.log"  # nosec B603


def test_a_dead_service_is_reported_and_restarted_with_backoff(tmp_path: Path) -> None:
    platform = ShortLived({}, tmp_path)
    process, log = platform._popen("feature")
    platform.running.append(RunningService("feature", 1, process, log))
    reports: list[str] = []
    process.wait()

    platform.supervise(reports.append)
    [service] = platform.running
    assert service.state == "restarting" and service.last_exit == 0
    assert reports == [f"feature exited with code 0; restarting in 1 s (see {log})"]
    platform.supervise(reports.append)  # the backoff is not over yet
    assert service.restarts == 0 and len(reports) == 1

    service.restart_at = time.monotonic()  # (instead of sleeping through the second)
    platform.supervise(reports.append)
    assert service.state == "running" and service.restarts == 1 and service.process is not process
    assert reports[-1].startswith("feature restarted (pid ")

    service.process.wait()
    platform.supervise(reports.append)
    assert "restarting in 2 s" in reports[-1]  # a second crash in a row waits twice as long
    platform.stop()


def test_status_file_and_om_status_show_each_process(tmp_path: Path, capsys: object) -> None:
    platform = ShortLived({}, tmp_path)
    platform.script = "import time; time.sleep(30)"
    process, log = platform._popen("ingest")
    platform.running.append(RunningService("ingest", 1, process, log, restarts=2, last_exit=-9))
    status_file = tmp_path / "status.json"
    try:
        launcher._write_status(status_file, platform, {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"})
        assert launcher.status(type("Args", (), {"data_dir": tmp_path})()) == 0
    finally:
        platform.stop()
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    header, row = out.splitlines()[:2]
    assert header.split() == ["service", "pid", "state", "restarts", "ready", "consumer", "lag"]
    assert row.split()[:6] == ["ingest", str(process.pid), "running", "(last", "exit", "-9)"]
    assert "no answer" in row  # nothing listens on its port 1


def test_consumer_lag_sums_the_partitions_of_a_metrics_page() -> None:
    page = (
        "# HELP om_consumer_lag Messages behind the partition's end\n# TYPE om_consumer_lag gauge\n"
        'om_consumer_lag{consumer="feature",partition="0",topic="market.trades.v1"} 12.0\n'
        'om_consumer_lag{consumer="feature",partition="1",topic="market.trades.v1"} 30.0\n'
    )
    assert launcher.consumer_lag(page) == 42
    assert launcher.consumer_lag("# nothing here\n") is None


def test_platform_health_scrapes_the_services_where_they_run() -> None:
    """Analytics' health panel reads each service's /metrics: at the platform's ports (not the defaults), and the
    gateway's without a credential on this loopback-only platform."""
    ports = ServicePorts(gateway=18000, ingest=18001, feature=18002, prediction=18003, analytics=18004)
    urls = json.loads(service_env("analytics", {}, ports)["ANALYTICS_SERVICE_URLS"])
    assert urls == {name: f"http://127.0.0.1:{ports.of(name)}" for name in SERVICES}
    assert service_env("gateway", {}, ports)["GATEWAY_PUBLIC_METRICS"] == "true"
    assert "GATEWAY_PUBLIC_METRICS" not in service_env("ingest", {}, ports)
