from om_ingest.app import create_app
from om_ingest.settings import IngestSettings
from om_runtime.service import serve, setup_telemetry


def main() -> None:
    settings = IngestSettings()
    setup_telemetry(settings)
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
