from pydantic_settings import SettingsConfigDict

from om_runtime.settings import Port, PostgresSettings, RedisSettings, ServiceSettings


class FeatureSettings(ServiceSettings, PostgresSettings, RedisSettings):
    model_config = SettingsConfigDict(env_prefix="FEATURE_", extra="ignore")

    service_name: str = "feature"
    http_port: Port = 8002
