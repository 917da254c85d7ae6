from pydantic_settings import SettingsConfigDict

from om_runtime.settings import Port, PostgresSettings, ServiceSettings


class AnalyticsSettings(ServiceSettings, PostgresSettings):
    model_config = SettingsConfigDict(env_prefix="ANALYTICS_", extra="ignore")

    service_name: str = "analytics"
    http_port: Port = 8004
    #: System metrics are published at most this often when something changed...
    system_interval_s: float = 1.0
    #: ...and at least this often regardless, since 24 h windows move with the clock.
    system_heartbeat_s: float = 10.0
    top_markets: int = 10
