from pydantic_settings import SettingsConfigDict

from om_runtime.settings import Port, ServiceSettings


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore")

    service_name: str = "gateway"
    http_port: Port = 8000
    ingest_url: str = "http://127.0.0.1:8001"
    prediction_url: str = "http://127.0.0.1:8003"
    analytics_url: str = "http://127.0.0.1:8004"
    upstream_timeout_s: float = 10.0
    #: Messages buffered per WebSocket client; a slower client loses the oldest (each update supersedes them).
    ws_queue_size: int = 100
