"""prediction: `prediction` serves; `prediction train | models | retrain-loop` are the offline jobs."""

import sys

from om_prediction.app import create_app
from om_prediction.settings import PredictionSettings
from om_runtime.service import serve, setup_telemetry


def serve_main() -> None:
    settings = PredictionSettings()
    setup_telemetry(settings)
    serve(create_app(settings), settings)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] != "serve":
        from om_prediction.cli import main as cli_main

        sys.exit(cli_main(sys.argv[1:]))
    serve_main()


if __name__ == "__main__":
    main()
