"""Poison or systemic: the runtime's pure rules for whose fault a failure is, and how long to pause."""

from __future__ import annotations

import psycopg
import psycopg.errors
import pytest
import redis.exceptions
from aiokafka.errors import KafkaConnectionError

from om_runtime.failures import Backoff, StreakGuard, is_retry_now, is_systemic, judge_isolated, signature


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError(),
        TimeoutError(),
        OSError("network unreachable"),
        KafkaConnectionError(),
        psycopg.OperationalError("server closed the connection"),
        psycopg.errors.UndefinedTable('relation "market_metrics" does not exist'),  # a missing table
        psycopg.errors.ReadOnlySqlTransaction("cannot execute INSERT in a read-only transaction"),
        redis.exceptions.ConnectionError(),
        redis.exceptions.ResponseError("OOM command not allowed when used memory > 'maxmemory'"),
        redis.exceptions.ReadOnlyError("You can't write against a read only replica."),
    ],
)
def test_infrastructure_errors_of_any_kind_are_systemic(exc: BaseException) -> None:
    assert is_systemic(exc)


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("amount is NaN"),
        KeyError("m1"),
        psycopg.errors.UniqueViolation(),
        psycopg.errors.NumericValueOutOfRange(),
        psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes"),  # raised client-side
    ],
)
def test_errors_about_the_event_or_the_code_are_not_systemic_alone(exc: BaseException) -> None:
    assert not is_systemic(exc)


def test_signatures_ignore_ids_and_numbers() -> None:
    a = KeyError("no settings for market 17 (event 1b0e4a52-8f0e-4a0c-9d7c-3f5e2b6a7c11)")
    b = KeyError("no settings for market 4 (event 2c0e4a52-8f0e-4a0c-9d7c-3f5e2b6a7c12)")
    assert signature(a) == signature(b)
    assert signature(a) != signature(ValueError(str(a)))


def test_most_of_a_batch_failing_the_same_way_is_systemic_a_lone_failure_is_poison() -> None:
    same = [KeyError("missing config")] * 3
    assert judge_isolated(4, same).systemic
    assert "3 of 4" in judge_isolated(4, same).reason
    assert not judge_isolated(7, same).systemic  # a minority: three poison events
    assert not judge_isolated(5, [ValueError("a"), KeyError("b"), RuntimeError("c")]).systemic  # no shared cause
    assert not judge_isolated(1, [ValueError("bad")]).systemic  # alone: poison
    assert not judge_isolated(3, []).systemic


def test_a_streak_of_lone_failures_the_same_way_shows_a_shared_cause() -> None:
    guard = StreakGuard(limit=3)
    assert not guard.failure(KeyError("x 1"))
    assert not guard.failure(KeyError("x 2"))
    assert guard.failure(KeyError("x 3"))
    guard.success()
    assert not guard.failure(KeyError("x 4"))
    assert not guard.failure(ValueError("other"))  # another signature restarts the count


def test_backoff_doubles_to_a_cap_and_resets() -> None:
    backoff = Backoff(first_s=0.5, cap_s=3.0)
    assert [backoff.next_delay() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    backoff.reset()
    assert backoff.next_delay() == 0.5


@pytest.mark.parametrize(
    ("exc", "now"),
    [
        (psycopg.errors.DeadlockDetected("deadlock detected"), True),
        (psycopg.errors.SerializationFailure("could not serialize access"), True),
        (psycopg.errors.UniqueViolation("duplicate key"), False),
        (psycopg.OperationalError("connection refused"), False),
        (ConnectionRefusedError(), False),
    ],
)
def test_only_transactions_rolled_back_on_a_conflict_are_retried_at_once(exc: Exception, now: bool) -> None:
    assert is_retry_now(exc) is now
