"""feature service: `feature` serves; `feature rebuild` recomputes all state from the topics (om_feature.rebuild)."""

import sys

from om_feature.settings import FeatureSettings
from om_runtime.service import serve, setup_telemetry


def main() -> None:
    if sys.argv[1:2] == ["rebuild"]:
        from om_feature import rebuild

        rebuild.main(sys.argv[2:])
        return
    from om_feature.app import create_app

    settings = FeatureSettings()
    setup_telemetry(settings)
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
