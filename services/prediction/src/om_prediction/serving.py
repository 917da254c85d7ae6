"""The model being served, swapped atomically: the production version in the registry, or the baseline.

`ModelHolder.refresh()` loads the registry's production version when it differs from the one served. A
corrupt or incompatible artifact is refused with one clear log line and the previous model keeps serving.
A swap replaces one reference, so a batch is scored wholly by the old or wholly by the new model.
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from om_prediction.registry import ArtifactError, Registry, RegistryError
from om_prediction.scoring import BASELINE_VERSION

if TYPE_CHECKING:
    from om_prediction.model import Ensemble

log = logging.getLogger("om_prediction.serving")


class ModelHolder:
    def __init__(self, root: Path | None) -> None:
        self.registry = Registry(root)
        self.model: Ensemble | None = None
        self.version = BASELINE_VERSION
        self.refused: dict[str, str] = {}  # version -> why it was refused (not retried until it changes)

    @property
    def current(self) -> tuple[Ensemble | None, str]:
        return self.model, self.version

    def refresh(self) -> bool:
        """Serve the registry's production model; True if the served model changed."""
        try:
            entry = self.registry.production()
        except (OSError, ValueError) as exc:
            log.error("model registry %s unreadable (%s); still serving %s", self.registry.root, exc, self.version)
            return False
        if entry is None:
            if self.model is not None:
                log.warning("no production model any more; serving the baseline")
                self.model, self.version = None, BASELINE_VERSION
                return True
            return False
        version = entry["version"]
        if version == self.version or self.refused.get(version) == entry.get("checksum"):
            return False
        try:
            model = self._load(entry)
        except (ArtifactError, RegistryError) as exc:
            self.refused[version] = entry.get("checksum", "")
            log.error("refusing model %s: %s; still serving %s", version, exc, self.version)
            return False
        self.model, self.version = model, version
        # The model stack is ~100k long-lived objects; scoring allocates ~10k per batch of 1,000, so the cyclic
        # collector's full passes would re-walk the model every few batches (a third of scoring's CPU).
        # Frozen objects are skipped by those passes; a replaced model is still freed by reference counting.
        gc.freeze()
        log.info("serving model %s", version)
        return True

    def _load(self, entry: dict[str, Any]) -> Ensemble:
        from om_prediction.registry import load

        return load(self.registry.root, entry)
