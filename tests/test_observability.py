"""Observability wiring: the Grafana dashboard and the alert rules read metrics the services really expose, and
the HTTP metrics every service records (om_runtime.metrics) label requests the way the alerts expect.

The services' apps are built in-process (no servers: /metrics needs none) and their /metrics read over ASGI.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI, HTTPException
from prometheus_client import CollectorRegistry, generate_latest

from om_runtime.metrics import HttpMetricsMiddleware

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "opinion-market"
DASHBOARDS = sorted((CHART / "files" / "dashboards").glob("*.json"))
ALERTS = CHART / "files" / "alerts.yaml"
SERVICES = sorted(p.parent.name for p in (ROOT / "services").glob("*/pyproject.toml"))

#: Series the alert rules may read from outside the services, each from a well-known exporter that the operator
#: runs (see the header of files/alerts.yaml and docs/operations.md). The dashboard may use none of them.
EXTERNAL = {
    "kube_pod_container_status_restarts_total": "kube-state-metrics",
    "kube_pod_container_resource_limits": "kube-state-metrics",
    "container_cpu_usage_seconds_total": "kubelet/cAdvisor",
    "container_memory_working_set_bytes": "kubelet/cAdvisor",
    "up": "Prometheus itself",
}

PROMQL_WORDS = {
    "sum", "avg", "min", "max", "count", "rate", "irate", "increase", "histogram_quantile", "by", "without", "on",
    "ignoring", "group_left", "group_right", "and", "or", "unless", "offset", "vector", "bool", "topk", "bottomk",
    "abs", "clamp_min", "clamp_max", "delta", "deriv", "absent", "time", "le",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (label matchers, ranges, grouping labels and functions removed)."""
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)  # label lists
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\boffset\s+\d+(ms|s|m|h|d|w|y)\b", "", expr)  # offset modifiers
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        word = match.group(0)
        following = expr[match.end() :].lstrip()[:1]
        if word in PROMQL_WORDS or following == "(":
            continue
        if word.startswith("__"):  # Grafana variables such as $__rate_interval
            continue
        names.add(word)
    return names


def test_metric_names_parser() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (app_name, le) (rate(om_http_request_duration_seconds_bucket{x="a b"}'
        "[$__rate_interval]))) / on (pod) group_left () up > 1 and rate(x_total[1h] offset 5m) > 0"
    )
    assert metric_names(expr) == {"om_http_request_duration_seconds_bucket", "up", "x_total"}


def exposed_series(text: str) -> set[str]:
    """Sample names a /metrics page can produce, from its TYPE lines (a histogram gives _bucket, _sum, _count)."""
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        names.add(name)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        if kind == "counter" and not name.endswith("_total"):
            names.add(f"{name}_total")
    return names


def build_app(service: str) -> FastAPI:
    app_module = importlib.import_module(f"om_{service}.app")
    settings_module = importlib.import_module(f"om_{service}.settings")
    [settings_class] = [
        value
        for key, value in vars(settings_module).items()
        if key.lower() == f"{service}settings" and isinstance(value, type)
    ]
    # The gateway's /metrics needs a credential by default; this test reads what it exposes, not who may see it.
    overrides = {"public_metrics": True} if service == "gateway" else {}
    app: FastAPI = app_module.create_app(settings_class(**overrides))
    return app


@pytest.fixture(scope="module")
async def service_metrics() -> dict[str, set[str]]:
    """Every service's /metrics, read from its app built in-process (its lifespan is not run: no servers)."""
    found = {}
    for service in SERVICES:
        app = build_app(service)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            reply = await client.get("/metrics")
        assert reply.status_code == 200, service
        found[service] = exposed_series(reply.text)
    return found


@pytest.fixture(scope="module")
def dashboards() -> list[dict[str, Any]]:
    assert DASHBOARDS, "no dashboard in helm/opinion-market/files/dashboards"
    return [json.loads(path.read_text(encoding="utf-8")) for path in DASHBOARDS]


def panel_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        if panel["type"] != "row"
        for target in panel["targets"]
    ]


def test_dashboard_is_well_formed(dashboards: list[dict[str, Any]]) -> None:
    for dashboard in dashboards:
        assert dashboard["uid"] and dashboard["title"]
        panels = dashboard["panels"]
        assert len({p["id"] for p in panels}) == len(panels), "panel ids are unique"
        assert len([p for p in panels if p["type"] != "row"]) >= 8
        for panel in panels:
            if panel["type"] == "row":
                continue
            assert panel["datasource"]["type"] == "prometheus"
            assert panel["targets"], panel["title"]
            assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]


async def test_every_dashboard_metric_is_exposed_by_a_service(
    dashboards: list[dict[str, Any]], service_metrics: dict[str, set[str]]
) -> None:
    exposed = set().union(*service_metrics.values())
    missing = [
        f"{title}: {name}"
        for dashboard in dashboards
        for title, expr in panel_exprs(dashboard)
        for name in metric_names(expr)
        if name not in exposed
    ]
    assert missing == []
    used = {name for d in dashboards for _, expr in panel_exprs(d) for name in metric_names(expr)}
    # The business metrics the dashboard shows: HTTP traffic, events processed, lag, dead letters, trades,
    # WebSocket clients and the gateway's fan-out delay.
    assert {"om_http_requests_total", "om_consumer_events_total", "om_consumer_lag"} <= used
    assert {
        "om_consumer_dead_letters_total",
        "gateway_ws_connections",
        "gateway_live_update_lag_seconds_bucket",
    } <= used
    assert {"faststream_published_messages_total", "om_http_request_duration_seconds_bucket"} <= used


async def test_every_alert_reads_a_known_metric(service_metrics: dict[str, set[str]]) -> None:
    exposed = set().union(*service_metrics.values())
    rules = [r for g in yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"] for r in g["rules"]]
    header = ALERTS.read_text(encoding="utf-8").split("groups:")[0]
    for rule in rules:
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        for name in names:
            if name in EXTERNAL:
                exporter = EXTERNAL[name].split(" ")[0].split("/")[0]
                assert exporter in header or name == "up", f"{rule['alert']}: document where {name} comes from"
            else:
                assert name in exposed, f"{rule['alert']} reads {name}, which no service exposes"
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_a_broken_dashboard_fails_the_check(service_metrics: dict[str, set[str]]) -> None:
    """The check above would catch a panel reading a metric nobody exposes."""
    exposed = set().union(*service_metrics.values())
    assert not metric_names("sum(rate(om_trades_that_never_existed_total[5m]))") <= exposed


def test_compose_and_helm_ship_the_same_dashboard_and_alerts() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    grafana_mounts = compose["services"]["grafana"]["volumes"]
    assert "./helm/opinion-market/files/dashboards:/var/lib/grafana/dashboards:ro" in grafana_mounts
    provider = yaml.safe_load((ROOT / "infra/grafana/provisioning/dashboards/opinion-market.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    prometheus_mounts = compose["services"]["prometheus"]["volumes"]
    assert "./helm/opinion-market/files/alerts.yaml:/etc/prometheus/rules/alerts.yaml:ro" in prometheus_mounts
    prometheus = yaml.safe_load((ROOT / "infra/prometheus.yml").read_text(encoding="utf-8"))
    assert prometheus["rule_files"] == ["/etc/prometheus/rules/*.yaml"]
    assert prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    alertmanager = yaml.safe_load((ROOT / "infra/alertmanager.yml").read_text(encoding="utf-8"))
    receivers = {r["name"] for r in alertmanager["receivers"]}
    assert alertmanager["route"]["receiver"] in receivers


def test_compose_observability_profile_ships_logs_to_elasticsearch() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    services = compose["services"]
    observability = {n for n, s in services.items() if "observability" in s.get("profiles", [])}
    assert observability == {
        "otel-collector", "jaeger", "prometheus", "grafana", "alertmanager", "elasticsearch", "kibana",
    }  # fmt: skip
    collector = yaml.safe_load((ROOT / "infra/otel-collector.yaml").read_text(encoding="utf-8"))
    logs = collector["service"]["pipelines"]["logs"]
    assert "filelog/containers" in logs["receivers"] and logs["exporters"] == ["elasticsearch"]
    assert collector["exporters"]["elasticsearch"]["endpoint"] == "http://elasticsearch:9200"
    assert "/var/lib/docker/containers:/var/lib/docker/containers:ro" in services["otel-collector"]["volumes"]
    assert services["kibana"]["ports"] == ["127.0.0.1:5601:5601"]


# ---- the HTTP metrics middleware ----


def metrics_app() -> tuple[FastAPI, CollectorRegistry]:
    registry = CollectorRegistry()
    app = FastAPI()

    @app.get("/v1/markets/{market_id}")
    async def market(market_id: str) -> dict[str, str]:
        if market_id == "missing":
            raise HTTPException(404, "no such market")
        if market_id == "boom":
            raise RuntimeError("handler crashed")
        return {"market_id": market_id}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    app.add_middleware(HttpMetricsMiddleware, registry=registry, service="ingest")
    return app, registry


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_http_metrics_label_route_templates_and_statuses() -> None:
    app, registry = metrics_app()
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for market in ("a", "b", "missing", "boom"):
            await client.get(f"/v1/markets/{market}")
        await client.get("/no/such/path")
        await client.get("/health")
    route = {"app_name": "ingest", "method": "GET", "route": "/v1/markets/{market_id}"}
    assert sample(registry, "om_http_requests_total", **route, status="200") == 2
    assert sample(registry, "om_http_requests_total", **route, status="404") == 1
    assert sample(registry, "om_http_requests_total", **route, status="500") == 1
    unmatched = {"app_name": "ingest", "method": "GET", "route": "unmatched", "status": "404"}
    assert sample(registry, "om_http_requests_total", **unmatched) == 1
    assert sample(registry, "om_http_request_duration_seconds_count", **route) == 4
    text = generate_latest(registry).decode()
    assert "/health" not in text and "/v1/markets/a" not in text, "probes are not counted; raw paths never labels"
