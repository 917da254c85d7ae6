"""feature service: `feature` serves; `feature rebuild` recomputes all state from the topics (om_feature.rebuild)."""

import gc
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
    app = create_app(settings)
    tune_gc(settings.gc_gen0_threshold)
    serve(app, settings)


def tune_gc(gen0_threshold: int) -> None:
    """Collect the young generation less often: each trade allocates a few short-lived containers, and the default
    (every 700 allocations) spent ~10 % of the run in the collector. The runtime freezes the start-up heap itself
    (om_runtime.heap)."""
    if gen0_threshold:
        _, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(gen0_threshold, gen1, gen2)


if __name__ == "__main__":
    main()
