"""The array literals analytics sends to `unnest`: every value comes back as it went in (checked against
PostgreSQL's own parsing in the integration tests; here, the quoting rules)."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest

from om_analytics.store import _array


def test_numbers_times_and_nulls() -> None:
    assert _array([]) == "{}"
    assert _array([1, 2.5, -0.125]) == "{1,2.5,-0.125}"
    assert _array([1.0, None, True, False]) == "{1.0,NULL,t,f}"
    at = datetime(2025, 6, 15, 12, 0, 30, 5, tzinfo=UTC)
    assert _array([at]) == "{2025-06-15T12:00:30.000005+00:00}"


def test_text_is_quoted_and_escaped() -> None:
    assert _array(["plain", 'with "quotes"', "back\\slash", "NULL", "{a,b}"]) == (
        '{"plain","with \\"quotes\\"","back\\\\slash","NULL","{a,b}"}'
    )
    assert _array(["x", None]) == '{"x",NULL}'


def test_objects_become_json_text() -> None:
    assert _array([{"k": 'v"'}]) == '{"{\\"k\\":\\"v\\\\\\"\\"}"}'


HOSTILE = ["plain", 'q"uote', "back\\slash", "NULL", "{a,b}", " spaced ", "ünï©ødé", "new\nline", "", '\\"', "a,b"]


@pytest.mark.integration
def test_postgresql_reads_back_exactly_what_was_sent(database_url: str) -> None:
    at = datetime(2025, 6, 15, 12, 0, 30, 5, tzinfo=UTC)
    with psycopg.connect(database_url) as conn:
        texts = [r[0] for r in conn.execute("SELECT unnest(%s::text[])", (_array(HOSTILE),)).fetchall()]
        floats = [r[0] for r in conn.execute("SELECT unnest(%s::float8[])", (_array([0.1, 1e-9, None]),))]
        times = [r[0] for r in conn.execute("SELECT unnest(%s::timestamptz[])", (_array([at]),))]
        objects = [r[0] for r in conn.execute("SELECT unnest(%s::jsonb[])", (_array([{"k": 'v"\\'}]),))]
    assert texts == HOSTILE
    assert floats == [0.1, 1e-9, None]
    assert times == [at]
    assert objects == [{"k": 'v"\\'}]
