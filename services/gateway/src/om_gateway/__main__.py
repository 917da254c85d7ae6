"""gateway service."""

import uvicorn

from om_gateway.app import create_app
from om_gateway.settings import GatewaySettings
from om_runtime.service import setup_telemetry


def main() -> None:
    settings = GatewaySettings()
    setup_telemetry(settings)
    # As om_runtime.service.serve, plus WebSocket settings: no per-message compression (it would compress each
    # update once per client instead of sending the one encoded text), uvicorn's own message size limit, and no
    # protocol-level pings: the endpoint's heartbeats keep connections alive through proxies and its idle timeout
    # closes dead peers, so uvicorn's ping every 20 s was a second write and read per client (500/s at 10,000).
    uvicorn.run(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        ws_per_message_deflate=False,
        ws_ping_interval=None,
        ws_max_size=settings.ws_max_message_bytes * 4,  # the endpoint closes with 1009 past the documented limit
        backlog=4096,
    )


if __name__ == "__main__":
    main()
