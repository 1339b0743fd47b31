"""The production topology on this machine (issue 19): PostgreSQL, Redis messaging
(prefect-redis), two Prefect API servers (``--no-services``) on one database behind a load
balancer, the background services in their own process, a worker per plant pool, MLflow on
PostgreSQL with its artifacts on S3 (moto over HTTP) and the MES gateway with its outbox on
PostgreSQL. One API server is SIGKILLed while the gateway forwards events and retrains run: no
event lost, no retrain twice, every run finishes, and nothing is left running afterwards.

The retrains are the real retrain deployments and flow, with every plant in a maintenance window
(andon.drill.drill_configs): their policy step runs and records each event, nothing trains.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from andon.drill import DRILL_ENV, drill_configs, run_drill
from andon.settings import AndonSettings
from andon.storage import S3ObjectStore
from andon.topology import Topology

pytestmark = pytest.mark.slow

PLANTS = ("plant-a", "plant-b")


@pytest.fixture
def redis_url() -> Iterator[str]:
    """An empty database of the local Redis (1-15, chosen at random), emptied again afterwards."""
    import redis

    base = os.environ.get("ANDON_TEST_REDIS_URL", "redis://127.0.0.1:6379")
    try:
        redis.Redis.from_url(f"{base}/0", socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Redis at {base} is not reachable ({exc}); CI must run the production topology")
        pytest.skip(f"Redis at {base} is not reachable ({exc})")
    for db in random.sample(range(1, 16), 15):
        client = redis.Redis.from_url(f"{base}/{db}")
        if client.dbsize() == 0:
            break
    else:
        pytest.skip(f"no empty database on the Redis at {base}")
    yield f"{base}/{db}"
    client.flushdb()


def test_an_api_server_killed_under_load_loses_no_event_and_retrains_nothing_twice(
    tmp_path: Path, postgres_database: Callable[[str], str], s3_endpoint: str, redis_url: str
) -> None:
    import psutil

    bucket = f"topology-{os.urandom(4).hex()}"
    S3ObjectStore(bucket, endpoint_url=s3_endpoint).ensure_bucket()
    settings = AndonSettings(
        home=tmp_path / "home",
        configs_dir=drill_configs(tmp_path / "configs", PLANTS),
        prefect_database_url=postgres_database("prefect"),
        mlflow_backend_store_uri=postgres_database("mlflow"),
        gateway_outbox_url=postgres_database("outbox"),
        object_store_url=f"s3://{bucket}",
        s3_endpoint_url=s3_endpoint,
        mes_secret="topology-secret-of-at-least-32-bytes",
        service_start_timeout_s=240,
        # the production configuration, authenticated as deployed (docs/security.md)
        PREFECT_API_AUTH_STRING="andon-ops:prefect-test-credential",
        MLFLOW_TRACKING_USERNAME="andon",
        MLFLOW_TRACKING_PASSWORD="mlflow-test-credential",
    )
    topo = Topology(settings, redis_url, PLANTS, api_servers=2, env=DRILL_ENV)
    t0 = time.monotonic()
    topo.start()
    started = time.monotonic() - t0
    try:
        # generous: an event a dying server marked as seen in Redis waits out the 5-minute mark (forwarder.py)
        report = run_drill(topo, events=200, significant=6, kill="prefect-api-1", kill_at=0.5, timeout_s=420)
        dead = topo.procs["prefect-api-1"].popen
        assert dead is not None and dead.poll() is not None, "the killed API server is back"
        alive = topo.procs["prefect-api-2"].popen
        assert alive is not None and alive.poll() is None, topo.log_tail("prefect-api-2")
        running = topo.pids()
    finally:
        topo.stop()
    left = [p for p in running if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not left, f"processes of the topology still running after stop: {left}"

    for figure, value, unit, target, extra in report.figures():
        print(f"{figure}: {value:g} {unit}" + (f" (target {target})" if target else "") + f" {extra}")
    print(f"topology up: {started:.1f} s")

    # the gateway took every message, also while the killed server was its first choice
    assert {s.status for s in report.sent} == {202}, report.figures()[1]
    assert len(report.accepted) == 200
    assert sum(1 for s in report.sent if s.after_kill) == 100
    assert report.at_kill["Running"] >= 1, report.at_kill  # killed while a retrain ran
    assert report.gateway["dead"] == 0 and report.gateway["delivered"] == 200, report.gateway
    forwarder = report.gateway["forwarder"]
    assert forwarder["failovers"] >= 1 and forwarder["api_url"] == topo.api_urls[1], forwarder
    # every accepted event is in Prefect's store (its primary key: at most once there)
    assert not report.lost, f"{len(report.lost)} accepted events never reached Prefect: {sorted(report.lost)[:5]}"
    # each retrain-worthy event started exactly one retrain run, which completed; no other event did
    assert len(report.triggering) == 6 and not report.missing_runs, report.missing_runs
    assert report.duplicate_runs == 0, report.runs_per_event
    assert report.unexpected_runs == 0, report.runs_per_event
    assert report.states == {"COMPLETED": 6}, report.runs
    # ... and the retrain policy decided on each once (a second run would have been a "duplicate event")
    assert report.decisions == dict.fromkeys(report.triggering, 1), report.decisions
    # the workers' and flow runs' requests went through both servers before the kill, then the survivor
    assert set(report.balancer) == set(topo.api_ports), report.balancer
