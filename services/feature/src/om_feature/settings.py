"""feature's settings: the shared infrastructure ones, plus its event-time windows and checkpoint cadence."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from om_runtime.settings import Port, PostgresSettings, RedisSettings, ServiceSettings


class FeatureSettings(ServiceSettings, PostgresSettings, RedisSettings):
    model_config = SettingsConfigDict(env_prefix="FEATURE_", extra="ignore")

    service_name: str = "feature"
    http_port: Port = 8002
    #: An event later than its market's newest one by more than this is applied to totals only.
    grace_s: float = Field(default=300.0, ge=0)
    #: At most one vector per market per this much event time (the last of a burst is always published).
    coalesce_ms: int = Field(default=100, ge=1)
    #: A point-in-time snapshot per market per this much event time (and one at close).
    snapshot_every_s: float = Field(default=900.0, gt=0)
    #: State + offsets are checkpointed at least this often (and when partitions move, and at shutdown).
    checkpoint_interval_s: float = Field(default=5.0, gt=0)
    #: Events held per market (and in all) while its market.created has not arrived; beyond, dead-lettered.
    max_held_per_market: int = Field(default=1_000, ge=0)
    max_held_total: int = Field(default=100_000, ge=0)
    #: How long the ids of applied events are remembered (from their checkpoint): at least ingest's outbox
    #: retention (120 s), the age of the oldest event a broker that lost its log is given again.
    dedupe_window_s: float = Field(default=600.0, gt=0)
    max_batch: int = Field(default=5_000, ge=1, description="records per consumed batch")
    #: Allocations between the garbage collector's young-generation passes (CPython's default is 700). Each trade
    #: allocates a few dozen container objects and almost none form cycles; at 700 the collector took ~15 % of the
    #: processing CPU. 0 keeps the interpreter's setting.
    gc_gen0_threshold: int = Field(default=10_000, ge=0)
