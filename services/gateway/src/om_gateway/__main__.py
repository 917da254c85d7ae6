from om_gateway.app import create_app
from om_gateway.settings import GatewaySettings
from om_runtime.service import serve, setup_telemetry


def main() -> None:
    settings = GatewaySettings()
    setup_telemetry(settings)
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
