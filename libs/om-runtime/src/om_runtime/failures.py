"""Whose fault is a failure: the event's (poison: dead-letter it) or the system's (stop, back off, retry)?

Pure rules, no I/O. An infrastructure error of any kind is systemic on its own: network, Kafka, PostgreSQL errors
that are not about the data, and every Redis error (a `ResponseError` such as OOM or READONLY included). Anything
else is judged by the company it keeps: when several events of a batch each fail alone the same way, the cause is
shared (a bug, a missing table) and nothing is dead-lettered; an event that fails alone, repeatedly, while its
neighbours succeed is poison.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

#: psycopg's SQLSTATE classes that blame the data (22: data exception, 23: integrity constraint violation).
_DATA_SQLSTATE_CLASSES = ("22", "23")


def is_systemic(exc: BaseException) -> bool:
    """Whether `exc` alone shows that the infrastructure, not the event, failed."""
    from aiokafka.errors import KafkaError

    if isinstance(exc, OSError | TimeoutError | KafkaError | MemoryError):
        return True
    if (redis_exceptions := sys.modules.get("redis.exceptions")) and isinstance(exc, redis_exceptions.RedisError):
        return True  # connection, timeout, OOM, READONLY, MISCONF...: never the event's fault
    if (psycopg := sys.modules.get("psycopg")) and isinstance(exc, psycopg.Error):
        if isinstance(exc, psycopg.DataError | psycopg.IntegrityError):  # also raised client-side, without a SQLSTATE
            return False
        sqlstate = getattr(exc, "sqlstate", None) or ""
        return not sqlstate.startswith(_DATA_SQLSTATE_CLASSES)
    return False


def is_retry_now(exc: BaseException) -> bool:
    """A transaction PostgreSQL rolled back to resolve a conflict with another (deadlock 40P01, serialization failure
    40001: SQLSTATE class 40): nothing is wrong, running it again at once normally succeeds. Pausing instead (a
    backoff, a loop's restart delay) delayed every update behind it by that pause (issue 9: analytics' snapshot
    rounds and consumer batches deadlock on `markets` rows now and then)."""
    psycopg = sys.modules.get("psycopg")
    return bool(psycopg and isinstance(exc, psycopg.Error) and (getattr(exc, "sqlstate", None) or "").startswith("40"))


_VOLATILE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|\d+(\.\d+)?")


def signature(exc: BaseException) -> str:
    """What makes two failures "the same way": the error's type and its message with ids and numbers blanked."""
    message = _VOLATILE.sub("#", str(exc).split("\n", 1)[0])[:200]
    return f"{type(exc).__module__}.{type(exc).__qualname__}: {message}"


@dataclass(frozen=True)
class Verdict:
    systemic: bool
    reason: str


def judge_isolated(batch_size: int, failures: Sequence[BaseException], *, min_shared: int = 2) -> Verdict:
    """After each event of a batch was applied alone: are the failures poison, or one shared cause?

    Shared when at least `min_shared` events failed with one signature and they are most of the batch."""
    if not failures:
        return Verdict(False, "no failures")
    common, count = Counter(signature(f) for f in failures).most_common(1)[0]
    if count >= min_shared and count * 2 > batch_size:
        return Verdict(True, f"{count} of {batch_size} events failed alone the same way: {common}")
    return Verdict(False, f"{len(failures)} of {batch_size} events failed alone")


class StreakGuard:
    """Across batches: consecutive events that failed alone the same way, with no success in between.

    Catches a shared cause when traffic is so low that every batch holds one event."""

    def __init__(self, limit: int = 5) -> None:
        self.limit = limit
        self._signature: str | None = None
        self._count = 0

    def success(self) -> None:
        self._signature, self._count = None, 0

    def failure(self, exc: BaseException) -> bool:
        """Record a failure; True when the streak shows a shared cause."""
        sig = signature(exc)
        self._count = self._count + 1 if sig == self._signature else 1
        self._signature = sig
        return self._count >= self.limit


class Backoff:
    """Exponential pauses for systemic failures: 0.5 s doubling up to `cap_s`, reset by a success."""

    def __init__(self, first_s: float = 0.5, cap_s: float = 30.0) -> None:
        self.first_s = first_s
        self.cap_s = cap_s
        self.attempt = 0

    def next_delay(self) -> float:
        delay = min(self.cap_s, self.first_s * 2.0**self.attempt)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
