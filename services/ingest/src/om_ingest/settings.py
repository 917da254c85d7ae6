"""ingest's settings: the shared service and PostgreSQL settings plus its own (prefix `INGEST_`)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from om_contracts.api import DEFAULT_MAX_FUTURE_SKEW_S
from om_runtime.settings import Port, PostgresSettings, ServiceSettings


class IngestSettings(ServiceSettings, PostgresSettings):
    model_config = SettingsConfigDict(env_prefix="INGEST_", extra="ignore")

    service_name: str = "ingest"
    http_port: Port = 8001
    #: The relay also polls this often, for events written by other replicas.
    outbox_poll_interval_s: float = 0.5
    outbox_batch_size: int = 500
    #: Relay loops per process; each publishes its share of the outbox's 64 slots (markets hash to slots).
    outbox_relays: int = Field(default=4, ge=1, le=64)
    #: A batch whose Kafka confirmations take longer fails and is published again (the broker is down).
    outbox_confirm_timeout_s: float = Field(default=10.0, gt=0)
    #: Published events stay this long, to be published again if the broker loses its log (the embedded one keeps
    #: it in memory): longer than consumers ever lag behind. Costs rows: about this many seconds of events.
    outbox_retention_s: float = Field(default=120.0, gt=0)
    #: How often the relay checks that the broker still has the events it confirmed.
    outbox_log_check_s: float = Field(default=2.0, gt=0)
    #: How far an event time may run ahead of ingest's clock before a write is refused (422).
    max_future_skew_s: float = Field(default=DEFAULT_MAX_FUTURE_SKEW_S, ge=0)
    #: Consume the raw upstream topics (ingest.raw-*.v1) and record their records.
    raw_intake: bool = True
    #: Decode the next raw batch while the previous one's transaction runs. Off by default: in 4 back-to-back pairs on
    #: a busy 2-core machine it was slower in 3 (1,513-1,970 against 2,485-4,020 trades/s) and equal in 1 (1,512);
    #: unmeasured on a quiet one.
    raw_pipelined: bool = False
    #: How long the raw intake's fetches wait for records when its topics are idle. The embedded broker (tansu) does
    #: not answer a waiting fetch when records arrive, only when its wait ends: a longer wait adds up to that much
    #: latency to a raw record that arrives while idle (under a backlog fetches find records and return at once), and
    #: a shorter one costs polls. At the services' 10 ms, the idle platform's broker used 0.23 of a core.
    raw_fetch_max_wait_ms: int = Field(default=250, ge=1, le=5000)
    #: How long an Idempotency-Key and its stored reply are kept.
    idempotency_ttl_s: float = Field(default=24 * 3600, gt=0)
