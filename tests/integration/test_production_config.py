"""The production configuration: Prefect and MLflow on PostgreSQL, artifacts and data in S3
(moto over real HTTP), started by `andon up` exactly as an operator would."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psycopg2
import pytest

from andon import stack
from andon.settings import get_settings, reset_settings
from andon.storage import S3ObjectStore

pytestmark = pytest.mark.slow


def _query(url: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return list(cur.fetchall())


def test_stack_on_postgres_and_s3(
    stack_env: Path,
    postgres_database: Callable[[str], str],
    s3_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prefect_db, mlflow_db = postgres_database("prefect"), postgres_database("mlflow")
    monkeypatch.setenv("ANDON_PREFECT_DATABASE_URL", prefect_db)  # plain postgresql:// is accepted
    monkeypatch.setenv("ANDON_MLFLOW_BACKEND_STORE_URI", mlflow_db)
    monkeypatch.setenv("ANDON_OBJECT_STORE_URL", "s3://prod-bucket")
    monkeypatch.setenv("ANDON_S3_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("ANDON_SERVICE_START_TIMEOUT_S", "180")
    # the production configuration starts only authenticated (tests/security/test_auth.py); every
    # client below (MLflow's, the flow run's Prefect client) reads these from the environment
    monkeypatch.setenv("PREFECT_API_AUTH_STRING", "andon-ops:prefect-test-credential")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "andon")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "mlflow-test-credential")
    reset_settings()
    settings = get_settings()
    bucket = S3ObjectStore("prod-bucket", endpoint_url=s3_endpoint)
    bucket.ensure_bucket()

    statuses = stack.up(settings)
    assert [s.state for s in statuses] == ["running", "running", "running"]

    # --- MLflow: a run with an artifact, a registered version and an alias, all through the server
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    try:
        mlflow.set_experiment("plant-a")
        with mlflow.start_run() as run:
            mlflow.log_param("recipe", "standard-vision-v1")
            mlflow.log_metric("val_f1", 0.97)
            mlflow.log_text("lineage", "lineage.txt")
        client = MlflowClient()
        client.create_registered_model("plant-a.surface-defects")
        version = client.create_model_version("plant-a.surface-defects", f"runs:/{run.info.run_id}/", run.info.run_id)
        client.set_registered_model_alias("plant-a.surface-defects", "champion", version.version)
        assert client.get_model_version_by_alias("plant-a.surface-defects", "champion").version == version.version
    finally:
        mlflow.set_tracking_uri(None)
    assert _query(mlflow_db, "select name from registered_models") == [("plant-a.surface-defects",)]
    assert _query(mlflow_db, "select alias from registered_model_aliases") == [("champion",)]
    artifact_keys = [o.key for o in bucket.list("mlflow-artifacts/")]
    assert any(k.endswith("/lineage.txt") for k in artifact_keys), artifact_keys

    # --- Prefect: a real Andon flow run against the Postgres-backed server, writing into S3
    env = {
        **os.environ,
        "PREFECT_API_URL": settings.prefect_api_url,
        "ANDON_OBJECT_STORE_URL": "s3://prod-bucket",
        "ANDON_S3_ENDPOINT_URL": s3_endpoint,
    }
    code = (
        "from datetime import datetime, UTC\n"
        "from flows.ingest import synthesize_plant_flow\n"
        "start = datetime(2026, 11, 5, tzinfo=UTC)\n"
        "b = synthesize_plant_flow(plant='plant-c', parts=12, seed=5, start=start)\n"
        "print(sum(x['parts'] for x in b))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("12")
    runs = _query(prefect_db, "select f.name, r.state_type from flow_run r join flow f on f.id = r.flow_id")
    assert ("synthesize-plant", "COMPLETED") in runs
    assert _query(prefect_db, "select key from artifact where key = 'plant-c-raw-batches'")
    assert sum(1 for o in bucket.list("plant-c/") if o.key.endswith(".png")) == 12

    assert sorted(stack.down(settings)) == ["mlflow", "prefect", "ui"]
