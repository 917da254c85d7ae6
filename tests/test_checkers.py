"""The type checker and the security scanner that `make check` runs over the workspace (not in `make test`) do
catch what they are there for: each is fed a small, deliberately broken file here."""

from __future__ import annotations

import shutil
import subprocess  # nosec B404  # runs fixed programs from argument lists, never a shell
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    return found or pytest.fail(f"{name} is not installed (make install)")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # nosec B603  # a fixed tool over a file this test wrote
        list(args), cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def test_mypy_strict_rejects_untyped_and_wrong_code(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text('def total(prices):\n    return sum(prices)\n\n\nx: int = "one"\n', encoding="utf-8")
    result = run(tool("mypy"), "--strict", "--no-incremental", "--config-file", "pyproject.toml", str(broken))
    assert result.returncode != 0
    assert "[no-untyped-def]" in result.stdout and "[assignment]" in result.stdout


def test_bandit_rejects_a_shell_injection(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("import subprocess\n\n\ndef run(cmd: str) -> None:\n    subprocess.call(cmd, shell=True)\n")
    result = run(tool("bandit"), "-c", "pyproject.toml", "-q", str(broken))
    assert result.returncode != 0
    assert "B602" in result.stdout
