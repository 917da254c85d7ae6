"""The gateway's settings (prefix `GATEWAY_`). Every default is a documented number (docs/api.md, "Defaults");
secrets come only from the environment or from files it names (`*_FILE`), never from code."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from om_runtime.settings import Port, PostgresSettings, RedisSettings, ServiceSettings

#: Requests per window for each role, per principal and per client IP, in `limits` notation.
DEFAULT_RATE_LIMITS: dict[str, str] = {
    "anonymous": "60/minute",
    "viewer": "300/minute",
    "trader": "600/minute",
    "analyst": "1200/minute",
    "admin": "6000/minute",
    "service": "60000/minute",
}


class GatewaySettings(ServiceSettings, PostgresSettings, RedisSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore")

    service_name: str = "gateway"
    http_port: Port = 8000
    ingest_url: str = "http://127.0.0.1:8001"
    prediction_url: str = "http://127.0.0.1:8003"
    analytics_url: str = "http://127.0.0.1:8004"
    upstream_timeout_s: float = 10.0
    #: Seconds a client is told to wait (Retry-After) when an upstream service is unavailable.
    upstream_retry_after_s: int = 5

    # --- credentials -----------------------------------------------------------------------------
    #: A file holding an admin API key accepted at start (`om up` writes one); its hash is kept, not the key.
    admin_api_key_file: Path | None = None
    #: HS256 shared secret, or a file holding it. Without either (and without a JWKS URL) JWTs are refused.
    jwt_secret: str | None = None
    jwt_secret_file: Path | None = None
    #: RS256 public keys; set to accept tokens of an identity provider (then HS256 is not accepted).
    jwt_jwks_url: str | None = None
    jwt_audience: str = "opinion-market"
    jwt_issuer: str | None = None
    jwt_leeway_s: int = 30
    #: Seconds a verified API key is trusted without asking PostgreSQL again (so a revocation takes this long).
    api_key_cache_s: float = 5.0

    # --- limits ----------------------------------------------------------------------------------
    rate_limits: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_RATE_LIMITS))
    max_body_bytes: int = 1024 * 1024
    ws_max_message_bytes: int = 64 * 1024
    ws_max_connections_per_principal: int = 100
    #: Open WebSockets per client IP address, counted from the handshake (before authentication); past it: 4029.
    ws_max_connections_per_ip: int = 200
    #: Updates buffered per WebSocket client; a client further behind is disconnected (close code 4008).
    ws_queue_size: int = 256
    #: After records arrive, the live feed keeps reading until none has come for this many milliseconds (at most 5×
    #: that in all) before it writes them out, so that updates published together reach each client in one write
    #: (one system call) instead of one per fetch.
    ws_linger_ms: float = 10.0
    #: Write half of a large round's clients (1,000 or more) from a second thread (om_gateway.ws.SendThread). Off
    #: until measured on a quiet machine: on the loaded one its end-to-end effect was within the noise.
    ws_send_thread: bool = False
    #: Freeze the WebSocket connections' objects out of Python's full garbage collections (om_gateway.heap), and
    #: collect everything at most this often (or after half the connections closed).
    ws_gc_freeze: bool = True
    ws_gc_full_every_s: float = 600.0
    ws_heartbeat_s: float = 15.0
    #: A client that sends nothing (not even a ping) for this long is disconnected (close code 4000).
    ws_idle_timeout_s: float = 120.0
    #: Past updates kept per channel for resuming after a gap.
    ws_backfill: int = 100
    #: How far back (seconds) each replica reads the update topics at start, so every replica has the same history.
    ws_history_s: float = 3600.0
    #: Seconds a connection has to authenticate with its first message when no token was in the URL.
    ws_auth_timeout_s: float = 10.0

    # --- exposure --------------------------------------------------------------------------------
    #: Origins allowed by CORS (none by default: the dashboard is served from the gateway itself).
    cors_origins: list[str] = Field(default_factory=list)
    #: Serve /docs, /redoc and /openapi.json without credentials (off by default; `om up` turns it on).
    public_docs: bool = False
    #: Serve /metrics without credentials (off by default: Prometheus sends a service credential).
    public_metrics: bool = False

    def hs256_secret(self) -> str | None:
        if self.jwt_secret_file is not None:
            return self.jwt_secret_file.read_text().strip()
        return self.jwt_secret
