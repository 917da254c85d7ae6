"""The model registry: versions with metrics, data range, features and checksum, in a local folder.

Layout: ``<root>/registry.json`` (every version's manifest and state) and ``<root>/<version>/`` (``model.pkl``,
``report.md``, PNGs). The root defaults to ``~/.local/share/opinion-market/models`` (``OM_MODELS_DIR``
overrides), outside the data that `make up` resets. States: candidate -> production -> archived; one
production version at a time. Promotion follows `PromotionRule`; refusals say why in numbers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle  # nosec B403  # only for the registry's own artifacts, each verified by sha256 before loading
import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported lazily: the service starts without loading LightGBM until a model exists
    from om_prediction.model import Ensemble

DEFAULT_ROOT = Path.home() / ".local" / "share" / "opinion-market" / "models"
FORMAT = 1
LIVE_FILE = "live.json"
log = logging.getLogger("om_prediction.registry")


def default_root() -> Path:
    """$OM_MODELS_DIR (the `om` tools), else $PREDICTION_MODELS_DIR (the service's setting, so the jobs in its
    image use the registry it serves from), else the default folder."""
    return Path(os.environ.get("OM_MODELS_DIR") or os.environ.get("PREDICTION_MODELS_DIR") or DEFAULT_ROOT)


class RegistryError(RuntimeError):
    """A registry operation that cannot be done (unknown version, refused promotion, bad artifact)."""


class ArtifactError(RegistryError):
    """An artifact that must not be served: checksum mismatch, missing feature, other library versions."""


@dataclass(frozen=True)
class PromotionRule:
    """Promote only when the paired Brier difference against the market has a 95 % upper bound below
    `max_upper_vs_market` and the candidate is not worse than production by more than `max_worse_than_production`
    Brier (both on the candidate's held-out fold)."""

    max_upper_vs_market: float = 0.0
    max_worse_than_production: float = 0.001

    def refusal(self, candidate: dict[str, Any], production: dict[str, Any] | None) -> str | None:
        m = candidate["metrics"]
        if not m["brier_diff_high"] < self.max_upper_vs_market:
            return (
                f"paired Brier difference vs the market {m['brier_diff']:+.5f} has a 95% upper bound "
                f"{m['brier_diff_high']:+.5f}, not below {self.max_upper_vs_market:+.5f}: "
                f"the model does not beat the price (model {m['brier']:.5f}, market {m['market_brier']:.5f})"
            )
        if production is not None:
            worse = m["brier"] - production["metrics"]["brier"]
            if worse > self.max_worse_than_production:
                return (
                    f"Brier {m['brier']:.5f} is {worse:.5f} worse than production {production['version']} "
                    f"({production['metrics']['brier']:.5f}); at most {self.max_worse_than_production} allowed"
                )
        return None


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def library_versions() -> dict[str, str]:
    import lightgbm
    import sklearn

    return {"lightgbm": lightgbm.__version__, "scikit-learn": sklearn.__version__, "python": platform.python_version()}


class Registry:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or default_root()

    @property
    def index(self) -> Path:
        return self.root / "registry.json"

    def _read(self) -> dict[str, Any]:
        if not self.index.exists():
            return {"format": FORMAT, "versions": {}}
        data: dict[str, Any] = json.loads(self.index.read_text())
        return data

    def _write(self, data: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.index.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
        tmp.replace(self.index)  # atomic: a reader sees the old or the new registry, never half

    def versions(self) -> list[dict[str, Any]]:
        entries = self._read()["versions"].values()
        return sorted((self._with_live(v) for v in entries), key=lambda v: v["created_at"])

    def get(self, version: str) -> dict[str, Any]:
        try:
            entry: dict[str, Any] = self._read()["versions"][version]
        except KeyError:
            raise RegistryError(f"no model version {version!r} in {self.root}") from None
        return self._with_live(entry)

    def _with_live(self, entry: dict[str, Any]) -> dict[str, Any]:
        path = self.root / entry["version"] / LIVE_FILE
        try:
            live = json.loads(path.read_text())
        except (OSError, ValueError):
            return entry
        return entry | {"live": live}

    def production(self) -> dict[str, Any] | None:
        return next((v for v in self.versions() if v["state"] == "production"), None)

    def new_version(self) -> str:
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        taken = self._read()["versions"]
        n = 1
        while f"m{stamp}-{n}" in taken:
            n += 1
        return f"m{stamp}-{n}"

    def add(self, version: str, ensemble: Ensemble, manifest: dict[str, Any]) -> dict[str, Any]:
        """Store a trained model as a candidate; returns its manifest."""
        folder = self.root / version
        folder.mkdir(parents=True, exist_ok=True)
        artifact = folder / "model.pkl"
        with artifact.open("wb") as f:
            pickle.dump({"format": FORMAT, "libraries": library_versions(), "ensemble": ensemble}, f)
        entry = {
            **manifest,
            "version": version,
            "state": "candidate",
            "created_at": datetime.now(UTC).isoformat(),
            "artifact": str(artifact.relative_to(self.root)),
            "checksum": sha256(artifact),
            "features": list(ensemble.features),
            "libraries": library_versions(),
        }
        data = self._read()
        data["versions"][version] = entry
        self._write(data)
        return entry

    def folder(self, version: str) -> Path:
        return self.root / version

    def promote(self, version: str, rule: PromotionRule | None = None, *, force: bool = False) -> dict[str, Any]:
        rule = rule or PromotionRule()
        data = self._read()
        entry: dict[str, Any] | None = data["versions"].get(version)
        if entry is None:
            raise RegistryError(f"no model version {version!r} in {self.root}")
        if entry["state"] == "production":
            return entry
        current = next((v for v in data["versions"].values() if v["state"] == "production"), None)
        if not force and (reason := rule.refusal(entry, current)):
            raise RegistryError(f"promotion of {version} refused: {reason}")
        load(self.root, entry)  # never promote an artifact that would not load
        if current is not None:
            current["state"] = "archived"
        entry["previous"] = current["version"] if current else None
        entry["state"] = "production"
        entry["promoted_at"] = datetime.now(UTC).isoformat()
        self._write(data)
        return entry

    def rollback(self) -> dict[str, Any]:
        """Production goes back to the version it replaced; the current one is archived."""
        data = self._read()
        current = next((v for v in data["versions"].values() if v["state"] == "production"), None)
        if current is None or not current.get("previous"):
            raise RegistryError("nothing to roll back to: no production model with a previous version")
        previous: dict[str, Any] = data["versions"][current["previous"]]
        load(self.root, previous)
        current["state"] = "archived"
        previous["state"] = "production"
        previous["promoted_at"] = datetime.now(UTC).isoformat()
        self._write(data)
        return previous

    def record_live(self, version: str, live: dict[str, Any]) -> None:
        """A version's live accuracy, in its own file: serving replicas write it while `om models` may promote,
        and a read-modify-write of registry.json from a replica could undo a promotion made meanwhile."""
        folder = self.root / version
        if not folder.is_dir():
            return
        tmp = folder / f"{LIVE_FILE}.tmp"
        tmp.write_text(json.dumps(live, sort_keys=True, default=float))
        tmp.replace(folder / LIVE_FILE)

    def record_live_all(self, live: dict[str, dict[str, Any]]) -> None:
        """Every registered version's live accuracy; the baseline's is not a registry version."""
        for version, stats in live.items():
            try:
                if self._with_live({"version": version}).get("live") != json.loads(json.dumps(stats, default=float)):
                    self.record_live(version, stats)
            except OSError as exc:  # a read-only registry volume: the metrics still carry the numbers
                log.warning("cannot record live accuracy of %s in %s: %s", version, self.root, exc)


def load(root: Path, entry: dict[str, Any]) -> Ensemble:
    """Load and verify an artifact; ArtifactError says exactly what is wrong with it."""
    path = root / entry["artifact"]
    if not path.exists():
        raise ArtifactError(f"model {entry['version']}: artifact {path} is missing")
    actual = sha256(path)
    if actual != entry["checksum"]:
        raise ArtifactError(f"model {entry['version']}: checksum mismatch ({actual[:12]} != {entry['checksum'][:12]})")
    try:
        with path.open("rb") as f:
            # our own artifact: its sha256 matched the registry's record above, so it is the file we wrote
            blob = pickle.load(f)  # noqa: S301  # nosec B301
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the artifact is unusable
        raise ArtifactError(f"model {entry['version']}: artifact does not load ({exc})") from exc
    libs, ours = blob.get("libraries", {}), library_versions()
    for lib in ("lightgbm", "scikit-learn"):
        if libs.get(lib, "").split(".")[:2] != ours[lib].split(".")[:2]:
            raise ArtifactError(
                f"model {entry['version']}: built with {lib} {libs.get(lib)}, this service has {ours[lib]}"
            )
    from om_prediction.model import FEATURES, Ensemble

    ensemble = blob.get("ensemble") if isinstance(blob, dict) else None
    if not isinstance(ensemble, Ensemble):
        raise ArtifactError(f"model {entry['version']}: artifact holds no ensemble ({type(ensemble).__name__})")
    missing = [f for f in ensemble.features if f not in FEATURES]
    if missing:
        raise ArtifactError(f"model {entry['version']}: needs features this service does not have: {missing}")
    return ensemble.prepare()
