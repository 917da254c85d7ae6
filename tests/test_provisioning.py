"""The provisioning commands of docker-compose.yml's topics-init and the Helm chart's hook Jobs, run for real:
topics against the embedded broker (created from the contracts' registry, idempotent), migrations against
PostgreSQL (every database component's schema, idempotent).

Each command is `python -c <code>`; the code runs in this interpreter (a fresh one per run costs seconds of imports
each on a loaded machine), with the command's environment, in a thread of its own (it calls asyncio.run)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import os
import shutil
import subprocess  # nosec B404  # runs fixed programs from argument lists, never a shell
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from aiokafka.admin import AIOKafkaAdminClient

from om_contracts.topics import TOPICS

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "opinion-market"


def compose_topics_command() -> list[str]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    command: list[str] = compose["services"]["topics-init"]["command"]
    return command


def rendered_hook_jobs() -> list[dict[str, Any]]:
    local = ROOT / ".tools" / "bin" / "helm"
    helm = os.environ.get("HELM") or shutil.which("helm") or (str(local) if local.exists() else None)
    if helm is None:
        pytest.skip("no helm binary (make test fetches one into .tools/bin): the hook Jobs could not be rendered")
    rendered = subprocess.run(  # nosec B603  # helm with fixed arguments over this repository's chart
        [helm, "template", "om", str(CHART)], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    return [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Job"]


def run(command: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    """Run `python -c <code>` as the container would, and return what it printed."""
    assert command[:2] == ["python", "-c"] and len(command) == 3
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    printed = io.StringIO()

    def execute() -> None:
        with contextlib.redirect_stdout(printed):
            exec(compile(command[2], "<provisioning command>", "exec"), {})  # nosec B102  # nosemgrep: eval-or-exec

    # Its own thread: the code calls asyncio.run, which cannot run inside the test's event loop.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(execute).result(timeout=120)
    return printed.getvalue()


def test_helm_and_compose_provision_topics_with_the_same_command() -> None:
    [job] = [j for j in rendered_hook_jobs() if j["metadata"]["name"].endswith("-topics")]
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == compose_topics_command()


async def test_topics_init_creates_the_registry_topics_once(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "KAFKA_REPLICATION_FACTOR": "1"}
    first = run(compose_topics_command(), env, monkeypatch)
    assert all(topic.name in first for topic in TOPICS), first
    again = run(compose_topics_command(), env, monkeypatch)
    assert "nothing, all exist" in again

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([t.name for t in TOPICS])
    finally:
        await admin.close()
    partitions = {d["topic"]: len(d["partitions"]) for d in described}
    assert partitions == {t.name: t.partitions for t in TOPICS}


def test_migration_jobs_migrate_every_database_component(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = [j for j in rendered_hook_jobs() if j["metadata"]["name"].endswith("-migrations")]
    assert jobs
    for i, job in enumerate(jobs):
        [container] = job["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value", "") for e in container["env"]}
        env["DATABASE_URL"] = database_url  # from the Secret in a cluster
        first = run(container["command"], env, monkeypatch)
        assert "applied" in first and "applied 0 " not in first, first
        if i == 0:  # a second run (every upgrade) applies nothing
            assert "applied 0 migration(s)" in run(container["command"], env, monkeypatch)
        with psycopg.connect(database_url) as conn:
            tables = conn.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s", (env["OM_SCHEMA"],)
            ).fetchone()
        assert tables is not None and tables[0] > 1, f"{env['OM_SCHEMA']} has no tables"
