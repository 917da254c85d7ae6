"""Checks of the deployment configuration: Dockerfiles, docker-compose.yml, skaffold.yaml and the Helm chart.

The compose and skaffold files are validated against the JSON Schemas copied into infra/schemas (draft-07,
validated with Draft7Validator explicitly: see infra/schemas/README.md). Every service folder under services/
must appear, under the same name, as a Dockerfile, a compose service, a skaffold artifact and a Helm
component. `helm lint --strict` and `helm template` run when a `helm` binary is on PATH (or named by $HELM).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "infra" / "docker" / "Dockerfile"
SCHEMAS = ROOT / "infra" / "schemas"
CHART = ROOT / "helm" / "opinion-market"
SERVICES = sorted(p.parent.name for p in (ROOT / "services").glob("*/pyproject.toml"))
INFRA = {"kafka", "postgres", "redis"}

Helm = tuple[str, dict[str, str]]  # the helm binary and the environment to run it in


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def load_json(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return json.load(f)


def schema_errors(schema_path: Path, document: Any) -> list[str]:
    schema = load_json(schema_path)
    Draft7Validator.check_schema(schema)
    errors = sorted(Draft7Validator(schema).iter_errors(document), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(ROOT / "docker-compose.yml")


@pytest.fixture(scope="module")
def skaffold() -> dict[str, Any]:
    return load_yaml(ROOT / "skaffold.yaml")


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return load_yaml(CHART / "values.yaml")


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


# ---- schemas ----


def test_services_are_discovered() -> None:
    assert {"ingest", "feature", "prediction", "analytics", "gateway"} <= set(SERVICES)


def test_compose_matches_compose_spec(compose: dict[str, Any]) -> None:
    assert schema_errors(SCHEMAS / "compose-spec.json", compose) == []


def test_skaffold_matches_v4beta14_schema(skaffold: dict[str, Any]) -> None:
    assert schema_errors(SCHEMAS / "skaffold-v4beta14.json", skaffold) == []
    # The schema does not constrain apiVersion.
    assert skaffold["apiVersion"] == "skaffold/v4beta14"
    assert skaffold["kind"] == "Config"


def test_helm_values_match_values_schema(values: dict[str, Any]) -> None:
    assert schema_errors(CHART / "values.schema.json", values) == []


def test_helm_chart_metadata() -> None:
    chart = load_yaml(CHART / "Chart.yaml")
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "opinion-market"
    assert str(chart["version"]) == "0.1.0"
    assert str(chart["appVersion"]) == "0.1.0"


# ---- every service everywhere, under one name ----


def test_one_dockerfile_for_every_service() -> None:
    assert DOCKERFILE.is_file()
    assert not list((ROOT / "services").glob("*/Dockerfile")), "services build from infra/docker/Dockerfile only"
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"^ARG SERVICE\s*$", text, re.M), "the service is a build argument"
    assert re.search(r"^COPY --from=ghcr\.io/astral-sh/uv:\d+\.\d+(\.\d+)? ", text, re.M), "pin the uv image"
    assert 'uv sync --frozen --no-dev --package "om-${SERVICE}" --no-editable' in text
    assert "--no-install-workspace" in text, "third-party dependencies get their own cached layer"
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim\s*$", text, re.M)
    copies = [line for line in text.splitlines() if line.startswith("COPY ")]
    assert not [c for c in copies if "infra" in c or "om-cli" in c], "the dev launcher stays out of images"
    runtime = text[text.index("AS runtime") :]
    assert re.search(r"^USER 10001(:10001)?\s*$", runtime, re.M)
    assert re.search(r"^EXPOSE \$\{PORT\}\s*$", runtime, re.M)
    assert "HEALTHCHECK" in runtime and "/health" in runtime
    assert re.search(r'^CMD \["om-service"\]\s*$', runtime, re.M)
    for label in ("title", "version", "revision", "source", "licenses"):
        assert f"org.opencontainers.image.{label}=" in runtime, f"OCI label {label} is missing"
    assert text.rstrip().splitlines()[-1].startswith("CMD"), "the runtime stage is the last, so the default target"
    assert re.search(r"^FROM builder AS dev\s*$", text, re.M), "skaffold's dev profile builds the dev target"


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    return subprocess.run([binary, "--no-color", str(path)], capture_output=True, text=True, timeout=60, check=False)


def test_hadolint_passes_the_dockerfile() -> None:
    result = hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_fails_a_broken_dockerfile(tmp_path: Path) -> None:
    broken = tmp_path / "Dockerfile"
    text = DOCKERFILE.read_text(encoding="utf-8")
    broken.write_text(
        text.replace("FROM ${PYTHON_IMAGE} AS runtime", "FROM python:latest AS runtime") + "RUN cd /tmp\n"
    )
    result = hadolint(broken)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # the latest tag
    assert "DL3003" in result.stdout  # cd instead of WORKDIR


@pytest.mark.parametrize("name", SERVICES)
def test_service_is_in_compose(name: str, compose: dict[str, Any], values: dict[str, Any]) -> None:
    services = compose["services"]
    assert name in services, f"docker-compose.yml has no service {name!r}"
    svc = services[name]
    assert svc["build"]["context"] == "."
    assert svc["build"]["dockerfile"] == "infra/docker/Dockerfile"
    assert svc["build"]["target"] == "runtime"
    assert svc["build"]["args"] == {"SERVICE": name, "PORT": str(values["components"][name]["port"])}
    env = env_of(svc)
    prefix = name.upper()
    assert env[f"{prefix}_HTTP_HOST"] == "0.0.0.0"
    assert env[f"{prefix}_HTTP_PORT"] == str(values["components"][name]["port"])
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert env["DATABASE_URL"].startswith("postgresql://")
    assert env["REDIS_URL"].startswith("redis://")
    assert env["OTEL_SERVICE_NAME"] == name
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
    depends = svc["depends_on"]
    assert depends["kafka"]["condition"] == "service_healthy"
    assert depends["topics-init"]["condition"] == "service_completed_successfully"
    # The collector runs only under the observability profile, so waiting for it must be optional.
    assert depends["otel-collector"]["required"] is False
    for dep, spec in depends.items():
        if dep in INFRA:
            assert spec["condition"] == "service_healthy", f"{name} must wait for {dep} to be healthy"


@pytest.mark.parametrize("name", SERVICES)
def test_service_is_a_skaffold_artifact(name: str, skaffold: dict[str, Any]) -> None:
    artifacts = {a["image"]: a for a in skaffold["build"]["artifacts"]}
    assert name in artifacts, f"skaffold.yaml builds no image {name!r}"
    artifact = artifacts[name]
    assert artifact["context"] == "."
    assert artifact["docker"]["dockerfile"] == "infra/docker/Dockerfile"
    assert artifact["docker"]["target"] == "runtime"
    assert artifact["docker"]["buildArgs"]["SERVICE"] == name
    templates = skaffold["deploy"]["helm"]["releases"][0]["setValueTemplates"]
    assert templates[f"components.{name}.image.repository"] == f"{{{{.IMAGE_REPO_{name}}}}}"
    assert templates[f"components.{name}.image.tag"].startswith(f"{{{{.IMAGE_TAG_{name}}}}}")


@pytest.mark.parametrize("name", SERVICES)
def test_service_is_a_helm_component(name: str, values: dict[str, Any]) -> None:
    assert name in values["components"], f"helm values have no component {name!r}"
    component = values["components"][name]
    assert component["image"]["repository"] == name
    assert component.get("enabled", True) is True


def test_nothing_extra_is_deployed(compose: dict[str, Any], skaffold: dict[str, Any], values: dict[str, Any]) -> None:
    """Images and components are exactly the services (compose also runs infrastructure)."""
    assert sorted(a["image"] for a in skaffold["build"]["artifacts"]) == SERVICES
    assert sorted(values["components"]) == SERVICES
    built = sorted(name for name, svc in compose["services"].items() if "build" in svc and name != "topics-init")
    assert built == SERVICES


# ---- docker-compose.yml ----


def test_compose_publishes_only_the_gateway(compose: dict[str, Any]) -> None:
    published = {name: svc["ports"] for name, svc in compose["services"].items() if name in SERVICES and "ports" in svc}
    assert published == {"gateway": ["8000:8000"]}
    # Observability UIs, if published, are reachable from this host only.
    for name, svc in compose["services"].items():
        if name not in SERVICES:
            for port in svc.get("ports", []):
                assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_compose_infrastructure(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:")
    kafka_env = env_of(services["kafka"])
    assert kafka_env["KAFKA_PROCESS_ROLES"] == "broker,controller", "single-node KRaft"
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["redis"]["image"].startswith("redis:7")
    for name in INFRA:
        assert services[name]["healthcheck"]["test"], f"{name} needs a healthcheck"
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert "ping" in services["redis"]["healthcheck"]["test"]
    assert services["otel-collector"]["image"].startswith("otel/opentelemetry-collector-contrib:")
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    assert services["jaeger"]["image"].startswith(("jaegertracing/jaeger:", "jaegertracing/all-in-one:"))


def test_compose_gateway_reaches_the_other_services(compose: dict[str, Any], values: dict[str, Any]) -> None:
    env = env_of(compose["services"]["gateway"])
    for upstream in ("ingest", "prediction", "analytics"):
        port = values["components"][upstream]["port"]
        assert env[f"GATEWAY_{upstream.upper()}_URL"] == f"http://{upstream}:{port}"


def test_compose_mounted_files_exist(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        for volume in svc.get("volumes", []):
            source = str(volume).split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


def test_prometheus_scrapes_every_service(values: dict[str, Any]) -> None:
    config = load_yaml(ROOT / "infra" / "prometheus.yml")
    targets = {
        target
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    }
    for name in SERVICES:
        assert f"{name}:{values['components'][name]['port']}" in targets


def test_otel_collector_pipelines() -> None:
    config = load_yaml(ROOT / "infra" / "otel-collector.yaml")
    assert "otlp" in config["receivers"]
    pipelines = config["service"]["pipelines"]
    assert "otlp/jaeger" in pipelines["traces"]["exporters"]
    assert config["exporters"]["otlp/jaeger"]["endpoint"] == "jaeger:4317"
    assert "prometheus" in pipelines["metrics"]["exporters"]
    for pipeline in pipelines.values():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in config[kind], f"{component} is used but not defined"


def test_grafana_prometheus_datasource() -> None:
    config = load_yaml(ROOT / "infra" / "grafana" / "provisioning" / "datasources" / "prometheus.yaml")
    [datasource] = [d for d in config["datasources"] if d["type"] == "prometheus"]
    assert datasource["url"] == "http://prometheus:9090"


# ---- skaffold.yaml ----


def test_skaffold_deploys_the_chart(skaffold: dict[str, Any]) -> None:
    assert skaffold["build"]["tagPolicy"] == {"gitCommit": {}}
    [release] = skaffold["deploy"]["helm"]["releases"]
    assert release["chartPath"] == "helm/opinion-market"
    assert (ROOT / release["chartPath"] / "Chart.yaml").is_file()


HELM_VALUES_PATCH = "/deploy/helm/releases/0/setValues/"


def test_skaffold_profiles_patch_the_release(skaffold: dict[str, Any], values: dict[str, Any]) -> None:
    profiles = {p["name"]: p for p in skaffold["profiles"]}
    assert {"dev", "minimal"} <= set(profiles)
    assert {"command": "dev"} in profiles["dev"]["activation"]
    for profile in profiles.values():
        assert "deploy" not in profile and "build" not in profile, "profiles patch, they do not copy"
        for patch in profile["patches"]:
            if not patch["path"].startswith(HELM_VALUES_PATCH):
                continue
            key = patch["path"].rsplit("/", 1)[1]
            if key.startswith("components."):
                assert key.split(".")[1] in values["components"], key
    replicas = {p["path"].rsplit("/", 1)[1]: str(p["value"]) for p in profiles["minimal"]["patches"]}
    assert replicas == {f"components.{name}.replicas": "1" for name in SERVICES}


def test_skaffold_dev_profile_builds_an_editable_synced_target(skaffold: dict[str, Any]) -> None:
    """`skaffold dev`: every artifact builds the Dockerfile's dev target, edited sources are synced into it, its
    root is writable (for the sync) and the gateway and Grafana are port-forwarded."""
    patches = {p["path"]: p["value"] for p in next(p for p in skaffold["profiles"] if p["name"] == "dev")["patches"]}
    artifacts = skaffold["build"]["artifacts"]
    stages = set(re.findall(r"^FROM \S+ AS (\w+)\s*$", DOCKERFILE.read_text(encoding="utf-8"), re.M))
    for i, artifact in enumerate(artifacts):
        assert patches[f"/build/artifacts/{i}/docker/target"] == "dev" in stages
        rules = patches[f"/build/artifacts/{i}/sync"]["manual"]
        assert {"src": f"services/{artifact['image']}/src/**/*.py", "dest": "/src"} in rules
    assert str(patches[HELM_VALUES_PATCH + "securityContext.readOnlyRootFilesystem"]).lower() == "false"
    forwards = [skaffold["portForward"][0], patches["/portForward/-"]]
    assert {(f["resourceName"], f["localPort"]) for f in forwards} == {
        ("opinion-market-gateway", 8000),
        ("grafana", 3000),
    }
    # The dev target restarts its process when a synced file changes.
    assert re.search(r'^CMD \["watchfiles"', DOCKERFILE.read_text(encoding="utf-8"), re.M)


# ---- helm ----


def helm_binary() -> str | None:
    """$HELM, helm on PATH, or the one `make test` fetched into .tools/ (infra/tools/fetch_helm.py)."""
    local = ROOT / ".tools" / "bin" / "helm"
    return os.environ.get("HELM") or shutil.which("helm") or (str(local) if local.exists() else None)


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    binary = helm_binary()
    if binary is None:
        pytest.skip(
            "no helm binary on PATH, in .tools/bin or $HELM: `helm lint --strict` and `helm template` were not run; "
            "values.yaml was still checked against values.schema.json"
        )
    home = tmp_path_factory.mktemp("helm-home")
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    return binary, env


def run_helm(helm: Helm, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    binary, env = helm
    result = subprocess.run(
        [binary, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    if ok:
        assert result.returncode == 0, f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def render(helm: Helm, release: str, *args: str) -> list[dict[str, Any]]:
    """`helm template` of the chart, as a list of manifests."""
    stdout = run_helm(helm, "template", release, str(CHART), *args).stdout
    return [doc for doc in yaml.safe_load_all(stdout) if doc]


def skaffold_set_args(skaffold: dict[str, Any]) -> list[str]:
    """The --set arguments skaffold would pass, with made-up image references and every profile on."""
    release = skaffold["deploy"]["helm"]["releases"][0]
    args: list[str] = []
    for key, template in release["setValueTemplates"].items():
        value = re.sub(r"\{\{\.IMAGE_REPO_(\w+)\}\}", r"registry.example/\1", template)
        value = re.sub(r"\{\{\.IMAGE_TAG_\w+\}\}", "0123456", value)
        value = re.sub(r"\{\{\.IMAGE_DIGEST_\w+\}\}", "sha256:" + "ab" * 32, value)
        args += ["--set-string", f"{key}={value}"]
    for profile in skaffold["profiles"]:
        for patch in profile["patches"]:
            if patch["path"].startswith(HELM_VALUES_PATCH):
                args += ["--set", f"{patch['path'].rsplit('/', 1)[1]}={patch['value']}"]
    return args


def test_helm_lint_strict(helm: Helm, skaffold: dict[str, Any]) -> None:
    run_helm(helm, "lint", "--strict", str(CHART))
    run_helm(helm, "lint", "--strict", str(CHART), *skaffold_set_args(skaffold))


def test_helm_template_renders_hardened_components(helm: Helm, values: dict[str, Any]) -> None:
    docs = render(helm, "om", "--namespace", "om")
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for name in SERVICES:
        assert ("Deployment", f"om-opinion-market-{name}") in kinds
        assert ("Service", f"om-opinion-market-{name}") in kinds
    assert ("ConfigMap", "om-opinion-market") in kinds

    for doc in docs:
        if doc["kind"] == "Service":
            assert doc["spec"]["type"] == "ClusterIP"
        if doc["kind"] != "Deployment":
            continue
        name = doc["metadata"]["labels"]["app.kubernetes.io/component"]
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        [container] = pod["containers"]
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
        assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/health"
        assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
        port = values["components"][name]["port"]
        assert container["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
        env = {e["name"]: e for e in container["env"]}
        prefix = name.upper()
        assert env[f"{prefix}_HTTP_HOST"]["value"] == "0.0.0.0"
        assert env[f"{prefix}_HTTP_PORT"]["value"] == str(port)
        assert env["OTEL_SERVICE_NAME"]["value"] == name
        if values["components"][name].get("database"):
            assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "opinion-market-datastores"
        if values["components"][name].get("redis"):
            assert env["REDIS_URL"]["valueFrom"]["secretKeyRef"]["key"] == "REDIS_URL"
        assert container["envFrom"] == [{"configMapRef": {"name": "om-opinion-market"}}]
        if name == "gateway":
            assert env["GATEWAY_INGEST_URL"]["value"] == "http://om-opinion-market-ingest:8001"


def test_helm_template_gateway_service_type(helm: Helm) -> None:
    docs = render(helm, "om", "--set", "components.gateway.service.type=LoadBalancer")
    types = {d["metadata"]["name"]: d["spec"]["type"] for d in docs if d["kind"] == "Service"}
    assert types.pop("om-opinion-market-gateway") == "LoadBalancer"
    assert set(types.values()) == {"ClusterIP"}


def test_helm_template_refuses_to_expose_internal_services(helm: Helm) -> None:
    result = run_helm(helm, "template", "om", str(CHART), "--set", "components.ingest.service.type=NodePort", ok=False)
    assert result.returncode != 0
    assert "internal services are ClusterIP" in result.stderr


def test_helm_template_with_skaffold_values(helm: Helm, skaffold: dict[str, Any]) -> None:
    docs = render(helm, "opinion-market", *skaffold_set_args(skaffold))
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    images = sorted(d["spec"]["template"]["spec"]["containers"][0]["image"] for d in deployments)
    assert images == [f"registry.example/{name}:0123456@sha256:{'ab' * 32}" for name in SERVICES]
    assert {d["spec"]["replicas"] for d in deployments} == {1}
    # skaffold's port-forward names the gateway Service of the release "opinion-market".
    [forward] = load_yaml(ROOT / "skaffold.yaml")["portForward"]
    assert all(
        d["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is False
        for d in deployments
    ), "the dev profile's pods have a writable root for file sync"
    services = {d["metadata"]["name"] for d in docs if d["kind"] == "Service"}
    assert forward["resourceName"] in services
