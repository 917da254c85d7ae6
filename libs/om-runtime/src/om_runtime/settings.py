"""Settings every service shares. Shared infrastructure uses the standard variable names
(`KAFKA_BOOTSTRAP_SERVERS`, `DATABASE_URL`, `REDIS_URL`, `OTEL_*`); a service's own settings use its prefix."""

from __future__ import annotations

from typing import Annotated

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

#: A TCP port (0 lets the system choose).
Port = Annotated[int, Field(ge=0, le=65535)]


class ServiceSettings(BaseSettings):
    """Subclass per service and set `model_config = SettingsConfigDict(env_prefix="INGEST_")`."""

    model_config = SettingsConfigDict(extra="ignore", env_file=None)

    service_name: str = "service"
    http_host: str = "127.0.0.1"
    http_port: Port = 8000
    log_level: str = "INFO"

    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092", validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS")
    )
    #: Replicas of each topic a service creates at start (the embedded broker has one; a cluster wants 3).
    kafka_replication_factor: int = Field(default=1, ge=1, validation_alias=AliasChoices("KAFKA_REPLICATION_FACTOR"))
    # Tansu (the embedded broker) answers a fetch only after fetch.max.wait; a low value keeps each hop fast.
    kafka_fetch_max_wait_ms: int = Field(default=10, validation_alias=AliasChoices("KAFKA_FETCH_MAX_WAIT_MS"))
    #: How long applied event ids are remembered to catch an event published twice under two offsets (a
    #: producer's retry, a replay, a broker that lost its log). Older ids are pruned; offsets do the rest.
    dedupe_window_hours: float = Field(default=24.0, gt=0)


class PostgresSettings(BaseSettings):
    database_url: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/postgres", validation_alias=AliasChoices("DATABASE_URL")
    )
    database_pool_size: int = Field(default=5, ge=1, validation_alias=AliasChoices("DATABASE_POOL_SIZE"))


class RedisSettings(BaseSettings):
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", validation_alias=AliasChoices("REDIS_URL"))
