"""Benchmarks. `python -m bench` runs the end-to-end benchmark (bench/e2e.py); `python -m bench <name> [args]`
runs another module of this folder (e.g. `python -m bench feature`), each with its own `main(argv)`.

    make bench                          # full end-to-end run, about 10 minutes
    make bench BENCH_ARGS=--quick       # short steps, about 3 minutes
    uv run python -m bench --rates 2000,4000 --step-seconds 30
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def modules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if not m.name.startswith("_"))


def main(argv: list[str]) -> None:
    if argv and not argv[0].startswith("-"):
        name, rest = argv[0], argv[1:]
        if name not in modules():
            sys.exit(f"no benchmark {name!r}; choose one of {', '.join(modules())}")
    else:
        name, rest = "e2e", argv
    importlib.import_module(f"bench.{name}").main(rest)


if __name__ == "__main__":
    main(sys.argv[1:])
