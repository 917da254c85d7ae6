from om_prediction.app import create_app
from om_prediction.settings import PredictionSettings
from om_runtime.service import serve, setup_telemetry


def main() -> None:
    settings = PredictionSettings()
    setup_telemetry(settings)
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
