from om_analytics.app import create_app
from om_analytics.settings import AnalyticsSettings
from om_runtime.service import serve, setup_telemetry


def main() -> None:
    settings = AnalyticsSettings()
    setup_telemetry(settings)
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
