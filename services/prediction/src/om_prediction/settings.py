from pydantic_settings import SettingsConfigDict

from om_runtime.settings import Port, PostgresSettings, RedisSettings, ServiceSettings


class PredictionSettings(ServiceSettings, PostgresSettings, RedisSettings):
    model_config = SettingsConfigDict(env_prefix="PREDICTION_", extra="ignore")

    service_name: str = "prediction"
    http_port: Port = 8003
    cache_ttl_s: int = 3600
