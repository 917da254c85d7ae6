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
import subprocess  # nosec B404  # runs fixed programs from argument lists, never a shell
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


def load_yaml(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        loaded: dict[str, Any] = yaml.safe_load(f)
    return loaded


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
    # bandit: the argument list is built from constants and paths this code controls; no shell
    return subprocess.run([binary, "--no-color", str(path)], capture_output=True, text=True, timeout=60, check=False)  # nosec B603


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
    # bandit: the test asserts the containers' bind address; nothing binds here
    assert env[f"{prefix}_HTTP_HOST"] == "0.0.0.0"  # nosec B104
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
    # bandit: the argument list is built from constants and paths this code controls; no shell
    result = subprocess.run(  # nosec B603
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
        # bandit: the test asserts the chart's /tmp mount; no file is created
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]  # nosec B108
        assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/health"
        assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
        port = values["components"][name]["port"]
        assert container["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
        env = {e["name"]: e for e in container["env"]}
        prefix = name.upper()
        # bandit: the test asserts the containers' bind address; nothing binds here
        assert env[f"{prefix}_HTTP_HOST"]["value"] == "0.0.0.0"  # nosec B104
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


# ---- helm: production values, kubernetes-validate, policies ----

PRODUCTION = CHART / "values-production.yaml"
CRD_SCHEMAS = SCHEMAS / "crds"
#: Every optional template on, so each kind is rendered and checked.
EVERYTHING_ON = [
    "--set", "namespace.create=true",
    "--set", "datastores.externalSecret.enabled=true",
    "--set", "monitoring.serviceMonitor.enabled=true",
    "--set", "monitoring.prometheusRule.enabled=true",
    "--set", "monitoring.alertmanagerConfig.enabled=true",
    "--set", "monitoring.grafanaDashboard.enabled=true",
    "--set", "components.feature.keda.enabled=true",
    "--set", "components.gateway.autoscaling.enabled=true",
    "--set", "components.gateway.ingress.enabled=true",
]  # fmt: skip


@pytest.fixture(scope="module")
def rendered(helm: Helm) -> dict[str, list[dict[str, Any]]]:
    """The chart rendered three ways: defaults, the production-like values file, and every option on."""
    return {
        "default": render(helm, "om", "--namespace", "om"),
        "production": render(helm, "opinion-market", "--namespace", "opinion-market", "-f", str(PRODUCTION)),
        "everything": render(helm, "om", "--namespace", "om", *EVERYTHING_ON),
    }


def crd_schema(doc: dict[str, Any]) -> Path:
    group, _, version = doc["apiVersion"].rpartition("/")
    return CRD_SCHEMAS / f"{doc['kind'].lower()}-{group}-{version}.json"


def manifest_errors(doc: dict[str, Any]) -> list[str]:
    """kubernetes-validate (strict, the newest Kubernetes it knows) for built-in kinds; the committed schemas in
    infra/schemas/crds for custom resources. A kind with neither is an error, never skipped silently."""
    import kubernetes_validate

    name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
    if "." in doc["apiVersion"].split("/")[0] and not doc["apiVersion"].startswith(
        ("apps/", "batch/", "policy/", "autoscaling/", "networking.k8s.io/", "rbac.authorization.k8s.io/")
    ):
        schema = crd_schema(doc)
        if not schema.is_file():
            return [f"{name}: no schema for {doc['apiVersion']} in {CRD_SCHEMAS.relative_to(ROOT)}"]
        return [f"{name}: {e}" for e in schema_errors(schema, doc)]
    try:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{name}: {'/'.join(map(str, exc.path))}: {exc.message}"]
    return []


def test_helm_lint_strict_production_values(helm: Helm) -> None:
    run_helm(helm, "lint", "--strict", str(CHART), "-f", str(PRODUCTION))
    run_helm(helm, "lint", "--strict", str(CHART), *EVERYTHING_ON)


@pytest.mark.parametrize("variant", ["default", "production", "everything"])
def test_every_rendered_manifest_is_valid(variant: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    errors = [error for doc in rendered[variant] for error in manifest_errors(doc)]
    assert errors == []


def test_everything_on_renders_every_kind(rendered: dict[str, list[dict[str, Any]]]) -> None:
    kinds = {d["kind"] for d in rendered["everything"]}
    assert kinds >= {
        "Namespace", "ServiceAccount", "ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler",
        "ScaledObject", "PodDisruptionBudget", "NetworkPolicy", "Ingress", "Job", "CronJob", "ExternalSecret",
        "ServiceMonitor", "PrometheusRule", "AlertmanagerConfig",
    }  # fmt: skip


def test_kubernetes_validate_rejects_a_broken_manifest(rendered: dict[str, list[dict[str, Any]]]) -> None:
    deployment = next(d for d in rendered["default"] if d["kind"] == "Deployment")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["replicas"] = "two"
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy2"] = "Always"
    assert manifest_errors(deployment) == []
    assert manifest_errors(broken), "kubernetes-validate accepted a Deployment with replicas: 'two'"
    rule = next(d for d in rendered["everything"] if d["kind"] == "PrometheusRule")
    broken_rule = json.loads(json.dumps(rule))
    broken_rule["spec"]["groups"][0]["rules"][0]["for"] = "ten minutes"
    assert manifest_errors(rule) == []
    assert manifest_errors(broken_rule), "the committed PrometheusRule schema accepted a bad duration"


def pods_of(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(kind/name, pod metadata, pod spec) of every workload."""
    pods = []
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] in ("Deployment", "Job"):
            pods.append((name, doc["spec"]["template"]["metadata"], doc["spec"]["template"]["spec"]))
        elif doc["kind"] == "CronJob":
            template = doc["spec"]["jobTemplate"]["spec"]["template"]
            pods.append((name, template["metadata"], template["spec"]))
    return pods


@pytest.mark.parametrize("variant", ["default", "production", "everything"])
def test_every_pod_is_restricted_and_bounded(variant: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    """Pod Security Admission `restricted`, plus the chart's own rules: resources with a memory limit, probes on
    long-running containers, no service-account token, a writable /tmp only."""
    pods = pods_of(rendered[variant])
    assert len(pods) >= 5 + 5 + 1  # deployments, hook jobs, the retraining cronjob
    for name, _, spec in pods:
        assert spec["automountServiceAccountToken"] is False, name
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), name
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add"), name
            assert sc.get("privileged") is not True, name
            resources = container["resources"]
            assert resources["requests"]["cpu"] and resources["requests"]["memory"], name
            assert resources["limits"]["memory"], name
            if name.startswith("Deployment/"):
                for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                    assert probe in container, f"{name} has no {probe}"
                assert container["livenessProbe"]["httpGet"]["path"] == "/health"
                assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
        for volume in spec.get("volumes", []):  # the volume types the restricted Pod Security Standard allows
            allowed = {"name", "emptyDir", "configMap", "secret", "projected", "persistentVolumeClaim"}
            assert set(volume) <= allowed, f"{name}: {volume}"


def test_namespace_enforces_restricted(rendered: dict[str, list[dict[str, Any]]]) -> None:
    [namespace] = [d for d in rendered["everything"] if d["kind"] == "Namespace"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_service_accounts_do_not_mount_tokens(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["default"]
    accounts = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceAccount"}
    for doc in docs:
        if doc["kind"] == "Deployment":
            account = accounts[doc["spec"]["template"]["spec"]["serviceAccountName"]]
            assert account["automountServiceAccountToken"] is False


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels and In-expressions) selects a pod with these labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] == "In", "extend this helper for other operators"
        if labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


@pytest.mark.parametrize("variant", ["default", "production"])
def test_network_policies_cover_every_pod(variant: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered[variant]
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    for name, meta, _ in pods_of(docs):
        labels = meta["labels"]
        applying = [p for p in policies if selects(p["spec"]["podSelector"], labels)]
        types = {t for p in applying for t in p["spec"]["policyTypes"]}
        assert types == {"Ingress", "Egress"}, f"{name} is not under a default deny"
        # Every pod may resolve names.
        assert any(
            {"port": 53, "protocol": "UDP"} in rule.get("ports", [])
            for p in applying
            for rule in p["spec"].get("egress", [])
        ), name


def ingress_sources(docs: list[dict[str, Any]], component: str) -> list[dict[str, Any]]:
    """The `from` peers (None for anyone) allowed into a component's pods."""
    policies = [d for d in docs if d["kind"] == "NetworkPolicy" and "Ingress" in d["spec"]["policyTypes"]]
    labels = {"app.kubernetes.io/name": "opinion-market", "app.kubernetes.io/instance": "om",
              "app.kubernetes.io/component": component}  # fmt: skip
    return [
        peer
        for p in policies
        if selects(p["spec"]["podSelector"], labels)
        for rule in p["spec"].get("ingress", [])
        for peer in rule.get("from", [None])
    ]


def test_network_policies_allow_only_the_architecture_flows(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["default"]
    # Only the gateway accepts traffic from anywhere.
    open_to_all = {c for c in SERVICES if None in ingress_sources(docs, c)}
    assert open_to_all == {"gateway"}
    callers = {
        c: sorted(
            peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
            for peer in ingress_sources(docs, c)
            if peer and "podSelector" in peer
        )
        for c in SERVICES
    }
    assert callers == {
        "gateway": [],
        "ingest": ["gateway"],
        "prediction": ["gateway"],
        "analytics": ["gateway"],
        "feature": ["prediction", "retraining"],  # the training export
    }
    for c in SERVICES:  # Prometheus scrapes everything, from its namespace only
        assert any(peer and "namespaceSelector" in peer for peer in ingress_sources(docs, c)), c


def test_hook_jobs_provision_topics_and_migrate_before_the_release(rendered: dict[str, list[dict[str, Any]]]) -> None:
    jobs = {d["metadata"]["name"]: d for d in rendered["default"] if d["kind"] == "Job"}
    topics = jobs["om-opinion-market-topics"]
    migrations = [j for n, j in jobs.items() if n.endswith("-migrations")]
    assert len(migrations) == 5  # every component with a database (the gateway keeps API keys)
    for job in (topics, *migrations):
        hook = job["metadata"]["annotations"]
        assert hook["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert int(topics["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        migrations[0]["metadata"]["annotations"]["helm.sh/hook-weight"]
    )
    command = " ".join(topics["spec"]["template"]["spec"]["containers"][0]["command"])
    assert "ensure_topics(" in command and "TOPICS" not in command, "topics come from the registry's default"


def test_retraining_cronjob_trains_and_promotes_into_the_registry_prediction_serves(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """The job's models must reach serving: it promotes by rule, into the one registry volume that prediction's
    pods mount at PREDICTION_MODELS_DIR (the root filesystem is read-only, so without it a model is lost)."""
    docs = rendered["default"]
    [cron] = [d for d in docs if d["kind"] == "CronJob"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    job_pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    [container] = job_pod["containers"]
    assert container["command"] == ["prediction", "retrain-loop", "--once"]
    env = {e["name"]: e for e in container["env"]}
    assert env["PREDICTION_FEATURE_URL"]["value"] == "http://om-opinion-market-feature:8002"
    assert "DATABASE_URL" in env and container["image"].startswith("prediction:")

    [claim] = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    [serving] = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-prediction")]
    for pod in (job_pod, serving["spec"]["template"]["spec"]):
        [workload] = pod["containers"]
        models_dir = {e["name"]: e.get("value") for e in workload["env"]}["PREDICTION_MODELS_DIR"]
        [mount] = [m for m in workload["volumeMounts"] if m["mountPath"] == models_dir]
        [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
        assert not mount.get("readOnly")


def test_secrets_are_referenced_never_inlined(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for variant, docs in rendered.items():
        assert not [d for d in docs if d["kind"] == "Secret"], f"{variant}: the chart must not carry a Secret"
    [external] = [d for d in rendered["production"] if d["kind"] == "ExternalSecret"]
    assert external["spec"]["secretStoreRef"] == {"kind": "ClusterSecretStore", "name": "vault"}
    assert external["spec"]["target"]["name"] == "opinion-market-datastores"


def test_production_scales_and_survives_disruptions(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["production"]
    deployments = {d["metadata"]["labels"]["app.kubernetes.io/component"]: d for d in docs if d["kind"] == "Deployment"}
    scalers = {
        d["spec"]["scaleTargetRef"]["name"] for d in docs if d["kind"] in ("HorizontalPodAutoscaler", "ScaledObject")
    }
    budgets = {d["metadata"]["name"] for d in docs if d["kind"] == "PodDisruptionBudget"}
    for component, deployment in deployments.items():
        name = deployment["metadata"]["name"]
        assert name in scalers, f"{component} does not autoscale"
        assert "replicas" not in deployment["spec"], f"{component}: the autoscaler owns replicas"
        assert name in budgets, f"{component} has no PodDisruptionBudget"
    [keda] = [d for d in docs if d["kind"] == "ScaledObject"]
    assert keda["spec"]["triggers"][0]["type"] == "kafka"
    assert keda["spec"]["triggers"][0]["metadata"]["consumerGroup"] == "feature"


def test_prometheus_rule_carries_every_alert(rendered: dict[str, list[dict[str, Any]]]) -> None:
    [rule] = [d for d in rendered["production"] if d["kind"] == "PrometheusRule"]
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    source = load_yaml(CHART / "files" / "alerts.yaml")
    assert alerts == {r["alert"] for g in source["groups"] for r in g["rules"]}
    assert alerts >= {
        "OpinionMarketConsumerLagHigh", "OpinionMarketConsumerBackingOff", "OpinionMarketDeadLetters",
        "OpinionMarketHighErrorRate", "OpinionMarketHighLatencyP99", "OpinionMarketNoTrades",
        "OpinionMarketPodRestarting", "OpinionMarketCPUHigh", "OpinionMarketMemoryHigh",
        "OpinionMarketUnauthorizedSpike", "OpinionMarketRateLimitedSpike",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (["--set", "securityContext.allowPrivilegeEscalation=true"], "allowPrivilegeEscalation"),
        (["--set", "components.ingest.port=99999"], "port"),
        (["--set", "components.ingest.replica=3"], "replica"),
        (["--set", "defaults.resources.limits=null"], "limits"),
        (["--set", "retraining.schedule=every night"], "schedule"),
        (["--set", "components.feature.keda.enabled=true", "--set", "components.feature.autoscaling.enabled=true"],
         "either autoscaling"),
        (["--set", "components.ingest.ingress.enabled=true"], "only a public component"),
    ],
)  # fmt: skip
def test_bad_values_are_rejected_with_a_clear_message(helm: Helm, override: list[str], message: str) -> None:
    result = run_helm(helm, "template", "om", str(CHART), *override, ok=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_helm_lint_fails_a_broken_chart(helm: Helm, tmp_path: Path) -> None:
    broken = tmp_path / "opinion-market"
    shutil.copytree(CHART, broken)
    components = broken / "templates" / "components.yaml"
    components.write_text(components.read_text(encoding="utf-8").replace("{{- end }}\n{{- end }}\n", "", 1))
    result = run_helm(helm, "lint", "--strict", str(broken), ok=False)
    assert result.returncode != 0, result.stdout


# ---- the schema validators reject broken copies ----


def test_compose_schema_rejects_a_broken_compose_file(compose: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(compose))
    broken["services"]["ingest"]["depends_on"]["kafka"]["condition"] = "service_ready"
    broken["services"]["gateway"]["ports"] = "8000:8000"
    errors = schema_errors(SCHEMAS / "compose-spec.json", broken)
    assert any("services/gateway/ports" in e for e in errors), errors
    assert any("services/ingest/depends_on" in e for e in errors), errors


def test_skaffold_schema_rejects_a_broken_skaffold_file(skaffold: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(skaffold))
    broken["build"]["artifacts"][0]["docker"]["buildArg"] = {"SERVICE": "ingest"}  # buildArgs, misspelt
    broken["portForward"][0]["port"] = "eight thousand"
    errors = schema_errors(SCHEMAS / "skaffold-v4beta14.json", broken)
    assert errors, "the skaffold schema accepted a misspelt field and a non-numeric port"
