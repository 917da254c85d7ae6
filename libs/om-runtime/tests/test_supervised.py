"""The runtime's background-loop supervisor: a crash restarts the loop after a pause; a transaction PostgreSQL rolled
back on a conflict (a deadlock) restarts it at once, since that pause delayed every update behind it."""

from __future__ import annotations

import logging

import psycopg.errors
import pytest

from om_runtime.service import _supervised


async def test_a_loop_whose_transaction_deadlocked_restarts_at_once(caplog: pytest.LogCaptureFixture) -> None:
    runs = 0

    async def loop() -> None:
        nonlocal runs
        runs += 1
        if runs <= 2:
            raise psycopg.errors.DeadlockDetected("deadlock detected")

    with caplog.at_level(logging.WARNING, logger="om_runtime.service"):
        await _supervised("snapshots", loop)
    assert runs == 3
    messages = [r.getMessage() for r in caplog.records]
    assert sum("restarting now" in m for m in messages) == 2
    assert not [m for m in messages if "restarting in 1 s" in m]


async def test_repeated_conflicts_fall_back_to_the_pause(caplog: pytest.LogCaptureFixture) -> None:
    runs = 0

    async def loop() -> None:
        nonlocal runs
        runs += 1
        if runs <= 4:
            raise psycopg.errors.SerializationFailure("could not serialize access")

    with caplog.at_level(logging.WARNING, logger="om_runtime.service"):
        await _supervised("leader", loop)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("restarting now" in m for m in messages) == 3
    assert sum("restarting in 1 s" in m for m in messages) == 1
