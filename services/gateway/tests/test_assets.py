"""Committed artefacts stay what they claim: the vendored chart library matches the checksums recorded when it
was taken from npm, and the WebSocket AsyncAPI document matches the protocol's models."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from om_gateway import asyncapi

VENDOR = Path(asyncapi.__file__).parent / "static" / "vendor" / "uplot"


def test_vendored_chart_library_matches_its_recorded_checksums() -> None:
    source = json.loads((VENDOR / "SOURCE.json").read_text())
    assert source["package"] == "uplot" and source["version"] == "1.6.32"  # pinned: change both on purpose
    assert set(source["sha256"]) == {p.name for p in VENDOR.iterdir()} - {"SOURCE.json"}
    for name, digest in source["sha256"].items():
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name


def test_dashboard_loads_the_vendored_library_from_the_gateway_only() -> None:
    page = (VENDOR.parents[1] / "dashboard.html").read_text()
    assert '<script src="/static/vendor/uplot/uPlot.iife.min.js"' in page
    assert "http://" not in page and "https://" not in page  # no CDN


def test_websocket_asyncapi_document_is_current() -> None:
    assert asyncapi.DOCUMENT.read_text() == asyncapi.render(), "run: uv run python -m om_gateway.asyncapi"
    document = json.loads(asyncapi.render())
    assert {"Subscribe", "Ack", "Snapshot", "Backfill", "Update"} <= set(document["components"]["messages"])
