"""The dashboard in a real browser (Debian's Chromium, driven by Playwright) against the whole platform: it
loads, shows a market by its question once trades arrive, and after one more trade the chart's last point is that
trade's price. Saves the screenshot shown in the README (docs/dashboard.png)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from om_cli.credentials import auth_headers
from om_cli.embedded import free_port
from om_cli.platform import Platform, ServicePorts

pytestmark = pytest.mark.e2e
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOT = Path(__file__).parents[3] / "docs" / "dashboard.png"
SERVICES = ("ingest", "feature", "prediction", "analytics", "gateway")


@pytest.fixture
def platform(infra_env: dict[str, str], tmp_path: Path) -> Iterator[Platform]:
    ports = ServicePorts(*(free_port() for _ in range(5)))
    # The health panel soon (the platform points analytics' scrapes at these ports and opens the gateway's /metrics).
    extra_env = {"ANALYTICS_SYSTEM_INTERVAL_S": "0.2", "ANALYTICS_HEALTH_INTERVAL_S": "1"}
    running = Platform(infra_env, tmp_path / "logs", ports, extra_env=extra_env)
    running.start(timeout_s=90)
    yield running
    running.stop()


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed (apt-get install chromium)")
def test_dashboard_shows_a_trade_as_the_charts_last_point(platform: Platform) -> None:
    gateway = platform.url("gateway")
    with httpx.Client(base_url=f"{gateway}/api/v1", headers=auth_headers(platform.admin_api_key), timeout=10) as api:
        drive(gateway, api, platform.admin_api_key or "")


def drive(gateway: str, api: httpx.Client, key: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    market = "browser-test"
    close_at = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    question = "Will the dashboard draw this trade?"
    assert api.post("/markets", json={"market_id": market, "question": question, "close_at": close_at}).is_success

    def trade(user: str, price: float) -> None:
        body = {"market_id": market, "user_id": user, "outcome": "YES", "amount": 10, "shares": 20, "price": price}
        assert api.post("/trades", json=body).status_code == 201

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" and "CSP" in m.text else None)
        page.goto(f"{gateway}/#key={key}")
        expect(page.locator("#status")).to_have_text("live", timeout=20_000)
        trade("alice", 0.61)
        row = page.locator("#markets tr", has_text=question)
        expect(row).to_be_visible(timeout=30_000)
        row.click()
        expect(page.locator("#detail-question")).to_have_text(question)
        expect(page.locator("#chart canvas").first).to_be_visible()
        trade("bob", 0.73)
        expect(page.locator("#chart")).to_have_attribute("data-last-price", "0.73", timeout=30_000)
        expect(row).to_contain_text("73.0%")
        expect(page.locator("#trades")).to_contain_text("bob", timeout=10_000)  # recent trades follow updates
        assert page.evaluate("window.omDashboard.state.series[1].at(-1)") == 0.73
        for service in SERVICES:  # the health panel: each service by name, read from its /metrics
            expect(page.locator("#health li", has_text=service)).to_contain_text("up", timeout=30_000)
        assert not errors, errors  # nothing blocked by the Content-Security-Policy
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        browser.close()
