"""om_runtime.settings: shared infrastructure under the standard unprefixed names, a service's own settings under
its prefix, and the defaults a developer gets with nothing set."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsConfigDict

from om_runtime.settings import PostgresSettings, RedisSettings, ServiceSettings

STANDARD = (
    "KAFKA_BOOTSTRAP_SERVERS",
    "KAFKA_REPLICATION_FACTOR",
    "KAFKA_FETCH_MAX_WAIT_MS",
    "DATABASE_URL",
    "DATABASE_POOL_SIZE",
    "REDIS_URL",
    "SERVICE_NAME",
    "HTTP_HOST",
    "HTTP_PORT",
    "LOG_LEVEL",
)


class XSettings(ServiceSettings, PostgresSettings, RedisSettings):
    model_config = SettingsConfigDict(env_prefix="X_", extra="ignore")

    service_name: str = "x"
    http_port: int = 8009
    batch_size: int = 100


class Combined(ServiceSettings, PostgresSettings):
    """Shared settings only, nothing overridden (overriding `http_port: int = ...` drops the base's bounds)."""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test process may run with real servers' variables set; start from none of them."""
    for name in STANDARD:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(f"X_{name}", raising=False)
    monkeypatch.delenv("X_BATCH_SIZE", raising=False)


def test_defaults() -> None:
    service = ServiceSettings()
    assert service.service_name == "service"
    assert service.http_host == "127.0.0.1"
    assert service.http_port == 8000
    assert service.log_level == "INFO"
    assert service.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert service.kafka_replication_factor == 1
    assert service.kafka_fetch_max_wait_ms == 10

    postgres = PostgresSettings()
    assert postgres.database_url == "postgresql://postgres@127.0.0.1:5432/postgres"
    assert postgres.database_pool_size == 5
    assert RedisSettings().redis_url == "redis://127.0.0.1:6379/0"


def test_standard_names_are_read_unprefixed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka-1:9092,kafka-2:9092")
    monkeypatch.setenv("KAFKA_REPLICATION_FACTOR", "3")
    monkeypatch.setenv("KAFKA_FETCH_MAX_WAIT_MS", "250")
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:secret@db:5432/om")
    monkeypatch.setenv("DATABASE_POOL_SIZE", "12")
    monkeypatch.setenv("REDIS_URL", "redis://cache:6379/2")

    service = ServiceSettings()
    assert service.kafka_bootstrap_servers == "kafka-1:9092,kafka-2:9092"
    assert service.kafka_replication_factor == 3
    assert service.kafka_fetch_max_wait_ms == 250
    postgres = PostgresSettings()
    assert postgres.database_url == "postgresql://app:secret@db:5432/om"
    assert postgres.database_pool_size == 12
    assert RedisSettings().redis_url == "redis://cache:6379/2"


def test_names_are_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("database_url", "postgresql://lower@db/om")
    assert PostgresSettings().database_url == "postgresql://lower@db/om"


def test_a_service_reads_its_own_settings_under_its_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PORT", "9999")  # another service's, or nobody's: ignored
    monkeypatch.setenv("SERVICE_NAME", "someone-else")
    monkeypatch.setenv("X_HTTP_PORT", "8123")
    monkeypatch.setenv("X_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("X_BATCH_SIZE", "7")

    settings = XSettings()
    assert settings.http_port == 8123
    assert settings.log_level == "DEBUG"
    assert settings.batch_size == 7
    assert settings.service_name == "x"


def test_a_prefixed_service_still_reads_the_standard_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    monkeypatch.setenv("KAFKA_REPLICATION_FACTOR", "3")
    monkeypatch.setenv("DATABASE_URL", "postgresql://db/om")
    monkeypatch.setenv("REDIS_URL", "redis://cache:6379/1")
    monkeypatch.setenv("X_KAFKA_BOOTSTRAP_SERVERS", "wrong:1")  # the prefix does not apply to them
    monkeypatch.setenv("X_DATABASE_URL", "postgresql://wrong/db")

    settings = XSettings()
    assert settings.http_port == 8009  # the subclass's own default
    assert settings.kafka_bootstrap_servers == "kafka:9092"
    assert settings.kafka_replication_factor == 3
    assert settings.database_url == "postgresql://db/om"
    assert settings.redis_url == "redis://cache:6379/1"


def test_the_standard_names_can_be_passed_as_arguments() -> None:
    settings = XSettings(KAFKA_BOOTSTRAP_SERVERS="k:1", DATABASE_URL="postgresql://a/b", REDIS_URL="redis://r/0")
    assert (settings.kafka_bootstrap_servers, settings.database_url, settings.redis_url) == (
        "k:1",
        "postgresql://a/b",
        "redis://r/0",
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("KAFKA_REPLICATION_FACTOR", "0"),
        ("KAFKA_REPLICATION_FACTOR", "three"),
        ("DATABASE_POOL_SIZE", "0"),
        ("KAFKA_FETCH_MAX_WAIT_MS", "soon"),
        ("HTTP_PORT", "70000"),
        ("HTTP_PORT", "-1"),
    ],
)
def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Combined()


def test_port_zero_is_allowed_for_an_ephemeral_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PORT", "0")
    assert ServiceSettings().http_port == 0
