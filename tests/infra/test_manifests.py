"""Lint of the ops files that cannot run here (no Docker daemon, no cluster): structure and links.

Also the dependency lock: every range of pyproject.toml is pinned within it, and every install
(make, CI, the image) goes through it.
"""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
LOCK = REPO / "requirements" / "lock.txt"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def _docs(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _by_kind(docs: list[dict]) -> dict[str, dict]:
    return {doc["kind"]: doc for doc in docs}


@pytest.mark.parametrize("name", ["api.yaml", "prefect-worker.yaml", "dask.yaml"])
def test_k8s_objects_have_the_required_fields(name: str) -> None:
    for doc in _docs(INFRA / "k8s" / name):
        assert {"apiVersion", "kind", "metadata", "spec"} <= set(doc), doc.get("kind")
        assert doc["metadata"]["name"].startswith("recsys-")
        if doc["kind"] == "Deployment":
            selector = doc["spec"]["selector"]["matchLabels"]
            labels = doc["spec"]["template"]["metadata"]["labels"]
            assert selector.items() <= labels.items(), "selector must match the pod labels"
            for container in doc["spec"]["template"]["spec"]["containers"]:
                assert container["image"] and container["resources"]["requests"]


def test_api_probes_service_and_hpa_point_at_the_api() -> None:
    kinds = _by_kind(_docs(INFRA / "k8s" / "api.yaml"))
    assert set(kinds) == {"Deployment", "Service", "HorizontalPodAutoscaler"}
    deployment = kinds["Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    port_names = {p["name"] for p in container["ports"]}
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in port_names
    service = kinds["Service"]
    assert service["spec"]["selector"].items() <= deployment["spec"]["selector"][
        "matchLabels"].items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    hpa = kinds["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert container["resources"]["requests"]["cpu"], "CPU utilisation needs a CPU request"


def test_worker_polls_the_pool_of_prefect_yaml() -> None:
    pools = {d["work_pool"]["name"] for d in
             yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]}
    kinds = _by_kind(_docs(INFRA / "k8s" / "prefect-worker.yaml"))
    (container,) = kinds["Deployment"]["spec"]["template"]["spec"]["containers"]
    command = container["command"]
    assert command[:3] == ["prefect", "worker", "start"]
    assert command[command.index("--pool") + 1] in pools
    env = {e["name"] for e in container["env"]}
    assert {"PREFECT_API_URL", "MONGODB_URI", "RECSYS_DATA_DIR", "RECSYS_PROJECT_DIR"} <= env
    claim = kinds["Deployment"]["spec"]["template"]["spec"]["volumes"][0]
    assert claim["persistentVolumeClaim"]["claimName"] == kinds["PersistentVolumeClaim"][
        "metadata"]["name"]


def _container(deployment: dict) -> dict:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def test_dask_workers_reach_the_scheduler_service_and_share_the_flows_data_dir() -> None:
    docs = _docs(INFRA / "k8s" / "dask.yaml")
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    (service,) = [d for d in docs if d["kind"] == "Service"]
    scheduler = deployments["recsys-dask-scheduler"]
    worker = deployments["recsys-dask-worker"]
    flows = _by_kind(_docs(INFRA / "k8s" / "prefect-worker.yaml"))["Deployment"]

    # the Service selects the scheduler pods and exposes 8786 (comms) and 8787 (dashboard)
    assert service["spec"]["selector"].items() <= scheduler["spec"]["selector"][
        "matchLabels"].items()
    scheduler_ports = {p["name"]: p["containerPort"] for p in _container(scheduler)["ports"]}
    assert {p["port"] for p in service["spec"]["ports"]} == {8786, 8787}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(scheduler_ports)
    assert _container(scheduler)["command"][:2] == ["dask", "scheduler"]

    # the workers run the project's image and connect to the Service by name
    command = _container(worker)["command"]
    assert command[:3] == ["dask", "worker",
                           f"tcp://{service['metadata']['name']}:8786"]
    assert _container(worker)["image"] == _container(flows)["image"]
    assert _container(scheduler)["image"] == _container(flows)["image"]

    # the same data volume at the same path as the flows, and the same data dir setting
    def mounts(deployment: dict) -> dict[str, str]:
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
                  for v in deployment["spec"]["template"]["spec"]["volumes"]}
        return {claims[m["name"]]: m["mountPath"]
                for m in _container(deployment)["volumeMounts"]}

    assert mounts(worker) == mounts(flows)

    def env(deployment: dict) -> dict[str, str | None]:
        return {e["name"]: e.get("value") for e in _container(deployment)["env"]}

    assert env(worker)["RECSYS_DATA_DIR"] == env(flows)["RECSYS_DATA_DIR"]
    assert {"PREFECT_API_URL", "MONGODB_URI", "MONGODB_DB"} <= set(env(worker))
    assert _container(worker)["resources"]["limits"]["memory"]
    # the README lines tell the flows where the scheduler is
    address = f"RECSYS_DASK_ADDRESS=tcp://{service['metadata']['name']}:8786"
    assert address in (INFRA / "k8s" / "dask.yaml").read_text()


def test_compose_services_and_references() -> None:
    compose = yaml.safe_load((INFRA / "compose.yaml").read_text())
    services = compose["services"]
    assert {"mongodb", "prefect-server", "worker", "api"} <= set(services)
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        depends = service.get("depends_on", {})
        assert set(depends) <= set(services), f"{name} depends on an unknown service"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (INFRA / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in compose["volumes"], f"{name}: volume {source} not declared"
    build = services["prefect-server"]["build"]
    assert (INFRA / build["context"] / build["dockerfile"]).resolve() == INFRA / "Dockerfile"
    worker_cmd = services["worker"]["command"]
    assert worker_cmd[worker_cmd.index("--pool") + 1] == "recsys-local"
    assert services["worker"]["environment"]["PREFECT_API_URL"].startswith(
        "http://prefect-server:")
    # the `dask` profile: a scheduler and workers from the same image, on the flows' volume
    assert services["dask-scheduler"]["profiles"] == services["dask-worker"]["profiles"] == [
        "dask"]
    assert services["worker"]["environment"]["RECSYS_DASK_ADDRESS"] == (
        "tcp://dask-scheduler:8786")
    assert services["dask-worker"]["command"][:3] == ["dask", "worker",
                                                      "tcp://dask-scheduler:8786"]
    assert services["dask-worker"]["image"] == services["worker"]["image"]
    assert services["dask-worker"]["volumes"] == services["worker"]["volumes"]


def test_dockerfile_copies_what_exists() -> None:
    lines = (INFRA / "Dockerfile").read_text().splitlines()
    copies = [line.split()[1:-1] for line in lines if line.startswith("COPY ")]
    assert copies
    for sources in copies:
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: missing in the repository"
    packages = re.findall(r'"(\w+)\*"', (REPO / "pyproject.toml").read_text())
    copied = {source for sources in copies for source in sources}
    assert set(packages) <= copied, "every installed package must be copied into the image"


def test_prometheus_scrapes_the_api_and_the_pushgateway() -> None:
    config = yaml.safe_load((INFRA / "monitoring" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["recsys-api"]["metrics_path"] == "/metrics"
    assert jobs["recsys-api"]["static_configs"][0]["targets"] == ["api:8000"]
    assert jobs["pushgateway"]["honor_labels"] is True


def _defined_metrics() -> set[str]:
    """Metric names the API and the flows export (counters get `_total`, histograms `_bucket`)."""
    names: set[str] = set()
    sources = [path for package in ("serving", "flows") for path in (REPO / package).rglob("*.py")]
    for source in sources:
        text = source.read_text()
        if "prometheus_client" not in text:
            continue
        constants = dict(re.findall(r'^(\w+)\s*=\s*"(\w+)"', text, flags=re.M))
        for kind, literal, constant in re.findall(
                r'(Counter|Histogram|Gauge)\(\s*(?:"(\w+)"|([A-Z_]+)\b)', text):
            name = literal or constants.get(constant, "")
            names |= {f"{name}_total"} if kind == "Counter" else (
                {f"{name}_bucket", f"{name}_sum", f"{name}_count"} if kind == "Histogram"
                else {name})
    return names


def test_grafana_dashboard_queries_only_exported_metrics() -> None:
    dashboard = json.loads((INFRA / "monitoring" / "grafana" / "dashboards" / "recsys.json")
                           .read_text())
    assert dashboard["uid"] and dashboard["panels"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    defined = _defined_metrics()
    assert "recsys_http_requests_total" in defined
    used = {name for panel in dashboard["panels"] for target in panel["targets"]
            for name in re.findall(r"\b(recsys_\w+)", target["expr"])}
    assert used and used <= defined, f"not exported: {sorted(used - defined)}"
    assert any(name.startswith("recsys_pipeline_") for name in used)


def _locked() -> dict[str, Version]:
    """Package -> pinned version of requirements/lock.txt (`name==version[ ; marker]` lines)."""
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            requirement = Requirement(line)
            (spec,) = requirement.specifier
            assert spec.operator == "==", line
            pins[canonicalize_name(requirement.name)] = Version(spec.version)
    return pins


def test_lock_pins_every_declared_dependency_within_its_range() -> None:
    project = PYPROJECT["project"]
    extras = project["optional-dependencies"]
    declared = [Requirement(line) for line in
                project["dependencies"] + extras["test"] + extras["dev"]]
    pins = _locked()
    for requirement in declared:
        name = canonicalize_name(requirement.name)
        if name == canonicalize_name(project["name"]):  # dev = the test extra + tools
            assert requirement.extras == {"test"}
            continue
        assert name in pins, f"{name} is not in the lock: run `make lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{name}=={pins[name]} is outside {requirement.specifier}: run `make lock`")
    assert "torch" not in pins  # the gpu extra is installed on its own
    # Prefect 3.8.8's scheduler creates no runs with SQLAlchemy 2.1 (tests/flows/test_schedules.py)
    assert Version("2.0") <= pins["sqlalchemy"] < Version("2.1")


def test_every_install_goes_through_the_lock() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert "LOCK := requirements/lock.txt" in makefile
    stamp_rule = re.search(r"^\$\(STAMP\):(.*)\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert stamp_rule and "$(LOCK)" in stamp_rule.group(1).split()
    installs = [line for line in stamp_rule.group(2).splitlines() if "pip install" in line]
    assert "-r $(LOCK)" in installs[-2] and "--no-deps -e ." in installs[-1]
    assert "make test" in (REPO / ".ci" / "run").read_text()
    dockerfile = (INFRA / "Dockerfile").read_text()
    assert "COPY requirements/lock.txt requirements/lock.txt" in dockerfile
    assert "pip install -c requirements/lock.txt -e ." in dockerfile


def test_the_wheel_ships_the_product_packages_only() -> None:
    include = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    top_level = {path.parent.name for path in REPO.glob("*/__init__.py")}
    shipped = {name for name in top_level if any(fnmatch.fnmatch(name, p) for p in include)}
    assert shipped == {"recsys", "ingest", "features", "training", "serving", "flows"}
