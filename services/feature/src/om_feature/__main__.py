from om_feature.app import create_app
from om_feature.settings import FeatureSettings
from om_runtime.service import serve, setup_telemetry


def main() -> None:
    settings = FeatureSettings()
    setup_telemetry(settings)
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
