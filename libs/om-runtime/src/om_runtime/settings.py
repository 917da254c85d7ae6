"""Settings every service shares. Shared infrastructure uses the standard variable names
(`KAFKA_BOOTSTRAP_SERVERS`, `DATABASE_URL`, `REDIS_URL`, `OTEL_*`); a service's own settings use its prefix."""

from __future__ import annotations

from typing import Annotated, Literal

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
    #: Partitions of each multi-partition topic a service creates (at least the registry's count): the most
    #: processes one consumer group can spread over. Existing topics are not changed.
    kafka_topic_partitions: int | None = Field(
        default=None, ge=1, validation_alias=AliasChoices("KAFKA_TOPIC_PARTITIONS")
    )
    #: Publishes within this many ms share one produce request (throughput for a little latency).
    kafka_linger_ms: int = Field(default=5, ge=0, validation_alias=AliasChoices("KAFKA_LINGER_MS"))
    #: lz4, zstd or gzip for brokers across a network; none on loopback (compression only costs CPU there).
    kafka_compression_type: Literal["gzip", "snappy", "lz4", "zstd"] | None = Field(
        default=None, validation_alias=AliasChoices("KAFKA_COMPRESSION_TYPE")
    )
    #: How long applied event ids are remembered to catch an event published twice under two offsets (a
    #: producer's retry, a replay, a broker that lost its log). Older ids are pruned; offsets do the rest.
    dedupe_window_hours: float = Field(default=24.0, gt=0)

    #: The event-loop lag probe (`om_event_loop_lag_seconds`): how often it wakes, in ms.
    event_loop_probe_ms: float = Field(default=50.0, gt=0, validation_alias=AliasChoices("OM_EVENT_LOOP_PROBE_MS"))
    #: A stall of the event loop longer than this many ms is logged with what the loop was running.
    event_loop_stall_ms: float = Field(default=250.0, gt=0, validation_alias=AliasChoices("OM_EVENT_LOOP_STALL_MS"))
    #: At most one stall warning per this many seconds (each stall is still counted; 0: log every stall).
    event_loop_warn_interval_s: float = Field(
        default=30.0, ge=0, validation_alias=AliasChoices("OM_EVENT_LOOP_WARN_INTERVAL_S")
    )
    #: Freeze the start-up heap out of the cyclic garbage collector once started (see om_runtime.heap).
    gc_freeze: bool = Field(default=True, validation_alias=AliasChoices("OM_GC_FREEZE"))
    #: ...and once more this many seconds later, after lazy imports and first requests.
    gc_freeze_again_s: float = Field(default=30.0, gt=0, validation_alias=AliasChoices("OM_GC_FREEZE_AGAIN_S"))
    #: For diagnosis: asyncio's debug mode, logging each callback or task step longer than this (unset: off).
    event_loop_slow_callback_ms: float | None = Field(
        default=None, gt=0, validation_alias=AliasChoices("OM_EVENT_LOOP_SLOW_CALLBACK_MS")
    )


class PostgresSettings(BaseSettings):
    database_url: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/postgres", validation_alias=AliasChoices("DATABASE_URL")
    )
    database_pool_size: int = Field(default=5, ge=1, validation_alias=AliasChoices("DATABASE_POOL_SIZE"))
    #: A read replica for query paths (`Database.reading()`); unset, queries use the primary.
    database_read_url: str | None = Field(default=None, validation_alias=AliasChoices("DATABASE_READ_URL"))


class RedisSettings(BaseSettings):
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", validation_alias=AliasChoices("REDIS_URL"))
