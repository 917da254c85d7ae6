"""ingest's settings: the shared service and PostgreSQL settings plus its own (prefix `INGEST_`)."""

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from om_contracts.api import DEFAULT_MAX_FUTURE_SKEW_S
from om_runtime.settings import Port, PostgresSettings, ServiceSettings


class IngestSettings(ServiceSettings, PostgresSettings):
    model_config = SettingsConfigDict(env_prefix="INGEST_", extra="ignore")

    service_name: str = "ingest"
    http_port: Port = 8001
    #: A read replica for the query endpoints (GET); unset, queries go to DATABASE_URL.
    database_read_url: str | None = Field(default=None, validation_alias=AliasChoices("DATABASE_READ_URL"))
    #: The relay also polls this often, for events written by other replicas.
    outbox_poll_interval_s: float = 0.5
    outbox_batch_size: int = 500
    #: How far an event time may run ahead of ingest's clock before a write is refused (422).
    max_future_skew_s: float = Field(default=DEFAULT_MAX_FUTURE_SKEW_S, ge=0)
    #: How long an Idempotency-Key and its stored reply are kept.
    idempotency_ttl_s: float = Field(default=24 * 3600, gt=0)
