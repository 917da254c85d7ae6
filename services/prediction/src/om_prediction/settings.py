from pydantic_settings import SettingsConfigDict

from om_runtime.settings import PostgresSettings, RedisSettings, ServiceSettings


class PredictionSettings(ServiceSettings, PostgresSettings, RedisSettings):
    model_config = SettingsConfigDict(env_prefix="PREDICTION_", extra="ignore")

    service_name: str = "prediction"
    http_port: int = 8003
    cache_ttl_s: int = 3600
