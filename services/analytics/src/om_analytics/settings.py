"""analytics' settings (env prefix `ANALYTICS_`); infrastructure uses the shared names (DATABASE_URL, ...)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from om_runtime.settings import Port, PostgresSettings, RedisSettings, ServiceSettings


class AnalyticsSettings(ServiceSettings, PostgresSettings, RedisSettings):
    model_config = SettingsConfigDict(env_prefix="ANALYTICS_", extra="ignore")

    service_name: str = "analytics"
    http_port: Port = 8004
    #: System metrics are published at most this often when something changed...
    system_interval_s: float = Field(default=1.0, gt=0)
    #: ...and at least this often regardless (the leader replica only).
    system_heartbeat_s: float = Field(default=10.0, gt=0)
    #: With no event for this long, the clock (end of every window) moves to the wall clock; 0 never.
    idle_advance_s: float = Field(default=60.0, ge=0)
    #: Prefix of every Redis key analytics writes (tests give each run its own).
    redis_prefix: str = "analytics"
    top_markets: int = Field(default=10, ge=1, le=100)
    #: Platform health: how often the leader reads each service's /metrics, and where.
    health_interval_s: float = Field(default=15.0, gt=0)
    service_urls: dict[str, str] = {
        "ingest": "http://127.0.0.1:8001",
        "feature": "http://127.0.0.1:8002",
        "prediction": "http://127.0.0.1:8003",
        "analytics": "http://127.0.0.1:8004",
        "gateway": "http://127.0.0.1:8000",
    }
    #: Consumer groups whose lag the health snapshot reports (read from Kafka's committed offsets).
    consumer_groups: list[str] = ["feature", "prediction", "analytics"]
    #: The leader publishes touched markets' and users' snapshots at least this often (sooner on a local batch).
    snapshot_interval_s: float = Field(default=0.05, gt=0)
    #: ...spending at most this share of the time on them (under a backlog, snapshots wait instead). A half keeps
    #: trade -> WebSocket p50 near 190 ms at 1,000 trades/s (a fifth: about 600 ms; the bench's latency step).
    snapshot_share: float = Field(default=0.5, gt=0, le=1)
    #: Events applied per transaction at most (under a backlog): a batch's fixed cost (statements, the rows of
    #: each market, user and position it touched) is then shared by more events.
    max_batch: int = Field(default=2000, ge=1)
    #: Users' snapshots: every flagged user once per interval, at most this share of the time (under a backlog,
    #: rounds come less often and cover more trades each). A user's snapshot costs several times a market's.
    user_snapshot_interval_s: float = Field(default=1.0, gt=0)
    user_snapshot_share: float = Field(default=0.2, gt=0, le=1)
    #: Markets (and users) snapshotted per leader round (users: per chunk of a round).
    refresh_batch: int = Field(default=500, ge=1)
    #: Retention, in days (relative to the clock): minute buckets, hour buckets, stored trades; day buckets stay.
    retention_minutes_days: float = Field(default=8.0, ge=2.0)
    retention_hours_days: float = Field(default=90.0, ge=1.0)
    retention_trades_days: float = Field(default=30.0, ge=1.0)
    prune_interval_s: float = Field(default=3600.0, gt=0)
