"""The production compose file, checked without a Docker engine (none runs on CI)."""

import re
from pathlib import Path

import yaml

INFRA = Path(__file__).resolve().parents[2] / "infra"


def _compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((INFRA / "docker-compose.yml").read_text())


def test_services_reference_each_other_correctly() -> None:
    services = _compose()["services"]
    assert {"postgres", "redis", "minio", "prefect-server", "mlflow", "gateway"} <= set(services)
    assert {"prefect-migrate", "prefect-api-1", "prefect-api-2", "prefect-services"} <= set(services)
    assert {s for s in services if s.startswith("worker-")} == {
        "worker-plant-a",
        "worker-plant-b",
        "worker-plant-c",
    }
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown {dep}"
            if svc["depends_on"][dep].get("condition") == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}, which has no healthcheck"
    for plant in ("plant-a", "plant-b", "plant-c"):
        assert (INFRA.parent / "configs" / "plants" / f"{plant}.yaml").exists()
        # the pool `andon deploy` creates and the plant's deployments use
        from andon.deployments import work_pool

        assert f"--pool', '{work_pool(plant)}'" in str(services[f"worker-{plant}"]["command"]).replace('"', "'")


def test_no_literal_secrets_and_ports_on_loopback() -> None:
    text = (INFRA / "docker-compose.yml").read_text()
    for line in text.splitlines():
        if re.search(r"(PASSWORD|SECRET)[A-Z_]*:\s*\S", line):
            assert "${" in line, f"literal secret: {line.strip()}"
    for svc in _compose()["services"].values():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{port} is exposed beyond loopback"


PREFECT_SERVERS = ("prefect-migrate", "prefect-api-1", "prefect-api-2", "prefect-services")


def test_production_services_use_postgres_s3_and_redis() -> None:
    from andon.topology import redis_env

    services = _compose()["services"]
    for name in PREFECT_SERVERS:
        prefect_env = services[name]["environment"]
        assert prefect_env["PREFECT_SERVER_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://"), name
        # what tests/integration/test_topology.py runs: messaging, cache, ordering, leases and Docket on Redis
        assert prefect_env.items() >= redis_env("redis://redis:6379/0").items(), name
    mlflow_cmd = " ".join(services["mlflow"]["command"])
    assert services["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://")
    assert "--artifacts-destination=s3://" in mlflow_cmd
    init = (INFRA / "postgres-init.sql").read_text()
    assert "CREATE DATABASE prefect" in init and "pg_trgm" in init


def test_prefect_runs_as_api_replicas_behind_a_balancer_with_the_services_apart() -> None:
    """The topology of tests/integration/test_topology.py (andon/topology.py), in containers."""
    services = _compose()["services"]
    migrate = services["prefect-migrate"]
    assert migrate["command"] == ["prefect", "server", "database", "upgrade", "-y"] and migrate["restart"] == "no"
    for name in PREFECT_SERVERS[1:]:
        assert services[name]["environment"]["PREFECT_SERVER_DATABASE_MIGRATE_ON_START"] == "false", name
        assert services[name]["depends_on"]["prefect-migrate"]["condition"] == "service_completed_successfully"
    replicas = [n for n in services if n.startswith("prefect-api-")]
    for name in replicas:
        assert (
            services[name]["command"][:3] == ["prefect", "server", "start"]
            and "--no-services" in services[name]["command"]
        )
    # the first replica registers Prefect's block types alone (two at once race on a fresh database)
    assert services["prefect-api-2"]["depends_on"]["prefect-api-1"]["condition"] == "service_healthy"
    assert services["prefect-services"]["command"] == ["prefect", "server", "services", "start"]
    # the balancer: every replica behind it; workers and their flow runs go through it
    assert services["prefect-server"]["image"].startswith("nginx:")
    (mount,) = services["prefect-server"]["volumes"]
    conf = (INFRA / mount.split(":")[0]).read_text()
    assert all(f"server {n}:4200" in conf for n in replicas) and "Upgrade $http_upgrade" in conf
    assert services["prefect-server"]["depends_on"].keys() == set(replicas)
    for plant in ("plant-a", "plant-b", "plant-c"):
        assert services[f"worker-{plant}"]["environment"]["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    # the gateway goes to the replicas themselves and fails over on its own (andon/gateway/forwarder.py)
    urls = services["gateway"]["environment"]["ANDON_GATEWAY_API_URLS"].split(",")
    assert urls == [f"http://{n}:4200/api" for n in replicas]


def test_kubernetes_work_pool_templates_are_complete_and_current() -> None:
    import json
    import re as _re

    from andon.config import list_plants, load_plant
    from andon.deployments import k8s_base_job_template, work_pool

    k8s = INFRA / "k8s"
    for plant in list_plants():
        path = k8s / f"work-pool-{plant}.json"
        doc = json.loads(path.read_text())
        assert doc == k8s_base_job_template(load_plant(plant)), f"{path} is stale: andon deployments k8s"
        declared = set(doc["variables"]["properties"])
        used = set(_re.findall(r"\{\{\s*(\w+)\s*\}\}", json.dumps(doc["job_configuration"])))
        assert used <= declared, f"{path}: undeclared template variables {used - declared}"
        manifest = doc["job_configuration"]["job_manifest"]
        assert manifest["kind"] == "Job" and manifest["apiVersion"] == "batch/v1"
        spec = manifest["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        assert {r.get("configMapRef", r.get("secretRef", {})).get("name") for r in container["envFrom"]} == {
            "andon-config",
            "andon-secrets",
        }
        assert spec["nodeSelector"] == {"andon.io/pool": work_pool(plant)} and spec["restartPolicy"] == "Never"
    config = yaml.safe_load((k8s / "andon-config.yaml").read_text())
    assert config["kind"] == "ConfigMap" and config["metadata"]["name"] == "andon-config"
    assert not any("SECRET" in k or "PASSWORD" in k for k in config["data"])  # secrets live in the Secret


def test_servers_are_authenticated_and_secrets_stay_off_command_lines() -> None:
    """Issue 16 points 5 and 11: Prefect's API auth string and MLflow's basic-auth app on; no
    password on any command line (``ps`` shows them to every user)."""
    services = _compose()["services"]
    for name in PREFECT_SERVERS[1:]:
        prefect_env = services[name]["environment"]
        assert prefect_env["PREFECT_SERVER_API_AUTH_STRING"].startswith("${PREFECT_API_AUTH_STRING:?"), name
    mlflow = services["mlflow"]
    assert "--app-name=basic-auth" in mlflow["command"]
    env = mlflow["environment"]
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"].startswith("${") and env["MLFLOW_FLASK_SERVER_SECRET_KEY"].startswith("${")
    ini = (INFRA / env["MLFLOW_AUTH_CONFIG_PATH"].rsplit("/", 1)[1]).read_text()
    assert "default_permission = NO_PERMISSIONS" in ini and "password" not in ini.split("[mlflow]")[1].lower()
    for name, svc in services.items():
        command = " ".join(map(str, svc.get("command", []) + svc.get("entrypoint", [])))
        assert not re.search(r"PASSWORD|SECRET|AUTH_STRING|postgresql", command), name
    for name in ("gateway", "worker-plant-a", "worker-plant-b", "worker-plant-c"):
        assert services[name]["environment"]["PREFECT_API_AUTH_STRING"].startswith("${PREFECT_API_AUTH_STRING")
    for name in ("worker-plant-a", "worker-plant-b", "worker-plant-c"):
        assert services[name]["environment"]["MLFLOW_TRACKING_PASSWORD"].startswith("${MLFLOW_TRACKING_PASSWORD")


def test_minio_root_credentials_only_for_the_bucket_setup_job() -> None:
    """Point 11: least privilege. The gateway has no object-store credential; workers and MLflow
    have their own users, created with scoped policies by ``minio-setup``."""
    services = _compose()["services"]
    holders = {name for name, svc in services.items() if "MINIO_ROOT" in str(svc.get("environment", {}))}
    assert holders == {"minio", "minio-setup"}
    assert not any(k.startswith("AWS_") for k in services["gateway"]["environment"])
    assert services["worker-plant-a"]["environment"]["AWS_ACCESS_KEY_ID"] == "andon-worker"
    assert services["mlflow"]["environment"]["AWS_ACCESS_KEY_ID"] == "andon-mlflow"
    for name in ("mlflow", "worker-plant-a"):
        assert services[name]["depends_on"]["minio-setup"]["condition"] == "service_completed_successfully"
    script = (INFRA / "minio-setup.sh").read_text()
    assert "mc admin user add local andon-worker" in script and "mc admin user add local andon-mlflow" in script
    assert "arn:aws:s3:::${BUCKET}/mlflow-artifacts/*" in script
