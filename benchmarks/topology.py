"""The production topology on this machine (issue 19), and an API server killed under load.

Starts what a multi-plant deployment runs (andon/topology.py): two Prefect API servers
(``--no-services``) on one PostgreSQL database behind a load balancer, Redis messaging
(prefect-redis), the background services as their own process, a worker per plant pool, MLflow
on PostgreSQL with artifacts on S3 (moto over HTTP, in this process), the MES gateway with its
outbox on PostgreSQL. Then the failover drill (andon/drill.py): ``andon deploy``, signed MES
events through the gateway with a retrain-worthy one every ``events / retrains``, the first API
server SIGKILLed mid-way and left dead; counted in Prefect's database afterwards: events lost,
retrain runs per triggering event and their final states.

Needs a PostgreSQL server (ANDON_TEST_POSTGRES_URL, default postgresql://postgres@127.0.0.1:5432/postgres:
a user that may create databases; they are dropped afterwards) and a Redis server (ANDON_TEST_REDIS_URL,
default redis://127.0.0.1:6379: an empty database 1-15 is used, then emptied).

Run: .venv/bin/python benchmarks/topology.py [--events 200] [--retrains 6] [--plants plant-a,plant-b]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from pathlib import Path

from _common import Recorder


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--retrains", type=int, default=6, help="retrain-worthy events among them")
    parser.add_argument("--rate", type=float, default=20.0, help="MES messages per second")
    parser.add_argument("--plants", default="plant-a,plant-b")
    args = parser.parse_args()
    plants = args.plants.split(",")
    for var in [k for k in os.environ if k.startswith(("PREFECT_", "ANDON_"))]:
        if var not in ("ANDON_TEST_POSTGRES_URL", "ANDON_TEST_REDIS_URL"):
            del os.environ[var]  # the topology's processes get their settings from it, not from here
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")

    import psutil
    import psycopg2
    import redis
    from moto.server import ThreadedMotoServer

    from andon.drill import DRILL_ENV, drill_configs, run_drill
    from andon.settings import AndonSettings
    from andon.storage import S3ObjectStore
    from andon.topology import Topology

    rec = Recorder("topology")
    tmp = Path(tempfile.mkdtemp(prefix="andon-topology-"))
    pg = os.environ.get("ANDON_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    conn = psycopg2.connect(pg)
    conn.autocommit = True
    names = {k: f"andon_bench_topology_{k}_{uuid.uuid4().hex[:8]}" for k in ("prefect", "mlflow", "outbox")}
    with conn.cursor() as cur:
        for name in names.values():
            cur.execute(f'CREATE DATABASE "{name}"')
    base = os.environ.get("ANDON_TEST_REDIS_URL", "redis://127.0.0.1:6379")
    db = next((d for d in range(1, 16) if redis.Redis.from_url(f"{base}/{d}").dbsize() == 0), None)
    if db is None:
        raise SystemExit(f"no empty database on the Redis at {base}")
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    s3 = f"http://{host}:{port}"
    S3ObjectStore("andon-topology", endpoint_url=s3).ensure_bucket()
    settings = AndonSettings(
        home=tmp / "home",
        configs_dir=drill_configs(tmp / "configs", plants),
        prefect_database_url=pg.rsplit("/", 1)[0] + "/" + names["prefect"],
        mlflow_backend_store_uri=pg.rsplit("/", 1)[0] + "/" + names["mlflow"],
        gateway_outbox_url=pg.rsplit("/", 1)[0] + "/" + names["outbox"],
        object_store_url="s3://andon-topology",
        s3_endpoint_url=s3,
        mes_secret=os.urandom(32).hex(),
        service_start_timeout_s=300,
        PREFECT_API_AUTH_STRING=f"andon-ops:{os.urandom(12).hex()}",
        MLFLOW_TRACKING_USERNAME="andon",
        MLFLOW_TRACKING_PASSWORD=os.urandom(12).hex(),
    )
    topo = Topology(settings, f"{base}/{db}", plants, api_servers=2, env=DRILL_ENV)
    try:
        t0 = time.monotonic()
        topo.start()
        up = time.monotonic() - t0
        processes = topo.pids()
        rss = sum(psutil.Process(p).memory_info().rss for p in processes if psutil.pid_exists(p)) / 2**20
        report = run_drill(topo, events=args.events, significant=args.retrains, rate=args.rate, timeout_s=600)
        drill_s = time.monotonic() - t0 - up
    finally:
        topo.stop()
        moto.stop()
        with conn.cursor() as cur:
            for name in names.values():
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        redis.Redis.from_url(f"{base}/{db}").flushdb()
    rec.figure("topology_up_seconds", up, "s", processes=len(processes), rss_mb=round(rss),
               note="migration, 2 API servers, services, MLflow, 2 workers, gateway: healthy")  # fmt: skip
    for figure, value, unit, target, extra in report.figures():
        rec.figure(figure, value, unit, target, **extra)
    rec.figure("drill_seconds", drill_s, "s", note="deploy, post, kill, until every event and retrain settled")
    rec.save()


if __name__ == "__main__":
    main()
