"""Benchmarks: figures, not pass/fail. `make bench` runs them all and prints a table."""
