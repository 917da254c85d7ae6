from pathlib import Path

from pydantic_settings import SettingsConfigDict

from om_runtime.settings import Port, PostgresSettings, RedisSettings, ServiceSettings


class PredictionSettings(ServiceSettings, PostgresSettings, RedisSettings):
    model_config = SettingsConfigDict(env_prefix="PREDICTION_", extra="ignore")

    service_name: str = "prediction"
    http_port: Port = 8003
    cache_ttl_s: int = 3600
    # The model registry's folder; empty: $OM_MODELS_DIR or ~/.local/share/opinion-market/models.
    models_dir: Path | None = None
    # Besides model.lifecycle.v1 events, look at the registry this often (a promotion made without a broker).
    registry_poll_s: float = 10.0
    # Live accuracy per model version (resolved markets) to the metrics and the registry, this often.
    live_accuracy_every_s: float = 60.0
    # Vectors per consumed batch at most (fewer when fewer wait): under a backlog, larger batches share each
    # batch's fixed round trips (dedupe claim, offsets, commit, confirmations) among more events.
    max_batch: int = 2000
