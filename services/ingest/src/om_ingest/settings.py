from pydantic_settings import SettingsConfigDict

from om_runtime.settings import Port, PostgresSettings, ServiceSettings


class IngestSettings(ServiceSettings, PostgresSettings):
    model_config = SettingsConfigDict(env_prefix="INGEST_", extra="ignore")

    service_name: str = "ingest"
    http_port: Port = 8001
    #: The relay also polls this often, for events written by other replicas.
    outbox_poll_interval_s: float = 0.5
    outbox_batch_size: int = 500
