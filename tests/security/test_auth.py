"""The production stack is authenticated (issue 16 points 5 and 11).

An unsigned POST to Prefect's ``/api/events`` started a retrain through its automation, and a
registered version's weights were replaced through MLflow's REST API with no credentials. Here
the production configuration (Prefect and MLflow on PostgreSQL, artifacts in S3 over HTTP) is
started by ``andon up`` as real processes, with credentials from the environment: requests
without them are refused (401), Andon's own clients with them work, the database password is on
no command line and in no readable PID file, and without credentials the production
configuration does not start at all.
"""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from andon import stack
from andon.errors import ConfigError
from andon.settings import get_settings, reset_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PREFECT_AUTH = "andon-ops:prefect-" + uuid.uuid4().hex[:16]
MLFLOW_USER, MLFLOW_PASSWORD = "andon", "mlflow-" + uuid.uuid4().hex[:16]
DB_PASSWORD = "db-pw-" + uuid.uuid4().hex[:12]  # the local server trusts 127.0.0.1: any password connects


def _with_password(url: str) -> str:
    scheme, rest = url.split("://", 1)
    user_host = rest.split("@", 1)
    return f"{scheme}://{user_host[0]}:{DB_PASSWORD}@{user_host[1]}"


def _production(monkeypatch: pytest.MonkeyPatch, make_db: Callable[[str], str], s3_endpoint: str) -> None:
    monkeypatch.setenv("ANDON_PREFECT_DATABASE_URL", _with_password(make_db("prefect")))
    monkeypatch.setenv("ANDON_MLFLOW_BACKEND_STORE_URI", _with_password(make_db("mlflow")))
    monkeypatch.setenv("ANDON_OBJECT_STORE_URL", "s3://auth-bucket")
    monkeypatch.setenv("ANDON_S3_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("ANDON_SERVICE_START_TIMEOUT_S", "180")
    for var in ("PREFECT_API_AUTH_STRING", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    reset_settings()


def _basic(credential: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(credential.encode()).decode()}


def _event() -> list[dict[str, object]]:
    return [
        {
            "id": str(uuid.uuid4()),
            "occurred": datetime.now(UTC).isoformat(),
            "event": "mes.sku.introduced",
            "resource": {
                "prefect.resource.id": "andon.plant.plant-a",
                "plant.id": "plant-a",
                "andon.significant": "true",
            },
            "payload": {"sku": "S9"},
        }
    ]


def _group_cmdlines(pgid: int) -> list[bytes]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid:
                    out.append((entry / "cmdline").read_bytes())
            except OSError:
                continue
    return out


def test_production_configuration_refuses_to_start_open(
    stack_env: Path,
    postgres_database: Callable[[str], str],
    s3_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _production(monkeypatch, postgres_database, s3_endpoint)
    with pytest.raises(ConfigError, match=r"PREFECT_API_AUTH_STRING .* MLFLOW_TRACKING_USERNAME"):
        stack.up(get_settings())
    assert not (stack_env / "run").exists() or not list((stack_env / "run").glob("*.pid.json"))
    # the embedded default on loopback may stay open (a laptop); beyond loopback it may not
    monkeypatch.delenv("ANDON_PREFECT_DATABASE_URL")
    monkeypatch.delenv("ANDON_MLFLOW_BACKEND_STORE_URI")
    monkeypatch.setenv("ANDON_HOST", "0.0.0.0")
    reset_settings()
    assert stack.production(get_settings())
    with pytest.raises(ConfigError, match="production configuration"):
        stack.up(get_settings())
    monkeypatch.setenv("ANDON_HOST", "127.0.0.1")
    reset_settings()
    assert not stack.production(get_settings())


def test_authenticated_production_stack_refuses_strangers_and_serves_andon(
    stack_env: Path,
    postgres_database: Callable[[str], str],
    s3_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mlflow
    from mlflow import MlflowClient

    from andon.events import Event, post_event
    from andon.storage import S3ObjectStore

    _production(monkeypatch, postgres_database, s3_endpoint)
    monkeypatch.setenv("PREFECT_API_AUTH_STRING", PREFECT_AUTH)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", MLFLOW_USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", MLFLOW_PASSWORD)
    reset_settings()
    settings = get_settings()
    S3ObjectStore("auth-bucket", endpoint_url=s3_endpoint).ensure_bucket()
    statuses = {s.name: s for s in stack.up(settings)}
    assert {n: s.state for n, s in statuses.items()} == {"prefect": "running", "mlflow": "running", "ui": "running"}

    # point 11: the database password is on no command line and in no PID file; PID files are 0600
    for name, svc in statuses.items():
        assert svc.pid and _group_cmdlines(svc.pid)
        for cmdline in _group_cmdlines(svc.pid):
            assert DB_PASSWORD.encode() not in cmdline and MLFLOW_PASSWORD.encode() not in cmdline, name
        pid_file = stack_env / "run" / f"{name}.pid.json"
        assert stat.S_IMODE(pid_file.stat().st_mode) == 0o600
        assert DB_PASSWORD not in pid_file.read_text() and "postgresql" not in pid_file.read_text()
    assert stat.S_IMODE((stack_env / "run").stat().st_mode) == 0o700

    api = settings.prefect_api_url
    mlflow_url = settings.mlflow_tracking_uri
    with httpx.Client(timeout=30) as http:
        # --- Prefect: the health probe stays open; everything else needs the auth string
        assert http.get(f"{api}/health").status_code == 200
        assert http.post(f"{api}/events", json=_event()).status_code == 401  # the unsigned retrain trigger
        assert http.post(f"{api}/events", json=_event(), headers=_basic("andon-ops:guess")).status_code == 401
        assert http.post(f"{api}/deployments/filter", json={}).status_code == 401
        assert http.post(f"{api}/events", json=_event(), headers=_basic(PREFECT_AUTH)).status_code == 204
        # --- the floor's page: nothing but the login form without an account
        ui = f"http://{settings.host}:{settings.ui_port}"
        assert http.get(f"{ui}/p/plant-a/review").status_code == 303  # to /login
        assert http.get(f"{ui}/p/plant-a/object/reports/plant-a/x.html").status_code == 303
        # Andon's own event client sends the credential from the environment
        ev = Event("andon.batch.validated", {"prefect.resource.id": "andon.plant.plant-a"}, {}, uuid.uuid4())
        assert post_event(api, ev)

        # --- MLflow: Andon's client (credentials from the environment) logs, registers and aliases
        mlflow.set_tracking_uri(mlflow_url)
        try:
            mlflow.set_experiment("plant-a")
            with mlflow.start_run() as run:
                mlflow.log_text("genuine weights", "andon/state_dict.pt")
            client = MlflowClient()
            client.create_registered_model("plant-a.surface-defects")
            mv = client.create_model_version("plant-a.surface-defects", f"runs:/{run.info.run_id}/", run.info.run_id)
            client.set_registered_model_alias("plant-a.surface-defects", "champion", mv.version)
        finally:
            mlflow.set_tracking_uri(None)
        exp = run.info.experiment_id
        artifact = (
            f"{mlflow_url}/api/2.0/mlflow-artifacts/artifacts/{exp}/{run.info.run_id}/artifacts/andon/state_dict.pt"
        )
        # the attack of point 5: replace a registered version's weights, move an alias, without credentials
        assert http.put(artifact, content=b"swapped weights").status_code == 401
        alias = {"name": "plant-a.surface-defects", "alias": "champion", "version": "1"}
        assert http.post(f"{mlflow_url}/api/2.0/mlflow/registered-models/alias", json=alias).status_code == 401
        create = {"name": "plant-a.evil"}
        assert http.post(f"{mlflow_url}/api/2.0/mlflow/registered-models/create", json=create).status_code == 401
        wrong = _basic(f"{MLFLOW_USER}:not-the-password")
        assert http.put(artifact, content=b"swapped weights", headers=wrong).status_code == 401
        read = http.get(artifact, headers=_basic(f"{MLFLOW_USER}:{MLFLOW_PASSWORD}"))
        assert read.status_code == 200 and read.content == b"genuine weights"
        assert http.get(artifact).status_code == 401  # reading needs credentials too

    # a Prefect client in another process (a worker, a flow run): works with the credential only
    code = "from prefect import get_client\nwith get_client(sync_client=True) as c: print(len(c.read_work_pools()))\n"
    env = {**os.environ, "PREFECT_API_URL": api}
    ok = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr[-2000:]
    env.pop("PREFECT_API_AUTH_STRING")
    refused = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "401" in refused.stderr

    assert sorted(stack.down(settings)) == ["mlflow", "prefect", "ui"]
