"""The failover drill on the production topology (``andon.topology``): MES events through the
gateway while an API server is killed, then everything counted where it ended up.

1. ``andon deploy`` through the load balancer: each plant's work pool and deployments, the
   retrain deployments with their event triggers (concurrency limit 1, ENQUEUE); the scheduled
   deployments are paused, so no run of the calendar lands in the count.
2. ``events`` signed MES messages posted to the gateway, a retrain-worthy ``sku.introduced``
   every ``events // significant`` messages (the plants in turn), the rest product-mix shifts under
   the plants' threshold (no retrain); one message in 20 posted twice (an MES retry). Mid-way
   (``kill_at``), as soon as a retrain run is running (the posting waits for one), an API server
   is SIGKILLed and left dead; the posting goes on.
3. Counted in Prefect's database: every event the gateway accepted in the ``events`` table (by
   id), the retrain flow runs per triggering event id and their final states; in the object store:
   the retrain policy's record of each event. The gateway's own figures come from its /healthz.

Nothing here imports Prefect: the deployment goes through ``andon deploy``, the rest is HTTP
and SQL. ``tests/integration/test_topology.py`` asserts on the report, ``benchmarks/topology.py``
prints it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from andon.errors import ServiceError
from andon.settings import REPO_ROOT
from andon.topology import Topology

TERMINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
# shorter waits than the defaults (10 s worker polls, 30 s before an ENQUEUEd run asks for its
# slot again) so a drill on two cores ends in minutes; the topology is otherwise as deployed
DRILL_ENV = {
    "PREFECT_WORKER_QUERY_SECONDS": "2",
    "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "2",
}
SMALL_SHIFT = ({"A": 0.55, "B": 0.45}, {"A": 0.5, "B": 0.5})  # 0.05 of total variation: no plant retrains


@dataclass
class Sent:
    index: int
    plant: str
    significant: bool
    status: int
    event_id: str | None
    after_kill: bool


@dataclass
class DrillReport:
    sent: list[Sent] = field(default_factory=list)
    posts: int = 0  # requests, MES retries included
    kill_index: int = -1
    killed: str = ""
    at_kill: Counter[str] = field(default_factory=Counter)  # states of the retrain runs when it died
    found: set[str] = field(default_factory=set)  # accepted event ids in Prefect's events table
    runs: list[dict[str, Any]] = field(default_factory=list)  # retrain flow runs
    decisions: Counter[str] = field(default_factory=Counter)  # event id -> retrain policy decisions recorded
    gateway: dict[str, Any] = field(default_factory=dict)  # its /healthz at the end
    balancer: dict[int, int] = field(default_factory=dict)
    lags: list[float] = field(default_factory=list)  # seconds from the gateway's receipt to Prefect's store
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def accepted(self) -> set[str]:
        return {s.event_id for s in self.sent if s.status == 202 and s.event_id}

    @property
    def triggering(self) -> set[str]:
        return {s.event_id for s in self.sent if s.status == 202 and s.significant and s.event_id}

    @property
    def lost(self) -> set[str]:
        return self.accepted - self.found

    @property
    def runs_per_event(self) -> Counter[str]:
        return Counter(str(r["event_id"]) for r in self.runs)

    @property
    def duplicate_runs(self) -> int:
        return sum(n - 1 for e, n in self.runs_per_event.items() if e in self.triggering and n > 1)

    @property
    def unexpected_runs(self) -> int:
        """Runs for an event that should not retrain (or for no event of the drill)."""
        return sum(n for e, n in self.runs_per_event.items() if e not in self.triggering)

    @property
    def missing_runs(self) -> set[str]:
        return self.triggering - set(self.runs_per_event)

    @property
    def states(self) -> Counter[str]:
        return Counter(str(r["state_type"]) for r in self.runs)

    def figures(self) -> list[tuple[str, float, str, str | None, dict[str, Any]]]:
        """(figure, value, unit, target, extra) rows, as the benchmarks print them."""
        run_s = sorted(float(r["seconds"]) for r in self.runs if r["seconds"] is not None)
        lags = sorted(self.lags) or [0.0]
        return [
            ("events_sent", len(self.sent), "events", None, {"posts_with_mes_retries": self.posts}),
            ("events_accepted", len(self.accepted), "events", None, {"statuses": _statuses(self.sent)}),
            ("events_lost", len(self.lost), "events", "0", {"in_prefect": len(self.found & self.accepted)}),
            (
                "delivery_lag_max_s",
                lags[-1],
                "s",
                None,
                {"p50": round(lags[len(lags) // 2], 2), "p99": round(lags[int(len(lags) * 0.99)], 2)},
            ),
            (
                "events_accepted_after_kill",
                sum(1 for s in self.sent if s.after_kill and s.status == 202),
                "events",
                None,
                {"killed": self.killed, "at_message": self.kill_index, "retrain_runs_then": dict(self.at_kill)},
            ),
            ("retrains_triggered", len(self.triggering), "events", None, {}),
            ("retrain_runs", len(self.runs), "runs", None, {"states": dict(self.states)}),
            ("duplicate_retrains", self.duplicate_runs, "runs", "0", {"unexpected_runs": self.unexpected_runs}),
            (
                "retrain_runs_not_completed",
                len(self.runs) - self.states["COMPLETED"],
                "runs",
                "0",
                {"missing": len(self.missing_runs)},
            ),
            (
                "policy_decisions_per_event_max",
                max(self.decisions.values(), default=0),
                "decisions",
                "1",
                {"decisions": sum(self.decisions.values())},
            ),
            (
                "gateway_failovers",
                float(self.gateway.get("forwarder", {}).get("failovers", 0)),
                "switches",
                None,
                {"resent": self.gateway.get("forwarder", {}).get("resent")},
            ),
            (
                "retrain_run_seconds_max",
                run_s[-1] if run_s else 0.0,
                "s",
                None,
                {"median": run_s[len(run_s) // 2] if run_s else None},
            ),
            *((f"{k}_seconds", v, "s", None, {}) for k, v in self.seconds.items()),
        ]


def drill_configs(dest: Path, plants: Sequence[str]) -> Path:
    """The repository's configs for ``plants`` only, each plant in a maintenance window all week:
    every retrain runs its policy step for real (MLflow, the object store, the decision record)
    and trains nothing, so a drill of dozens of retrains fits on a laptop (training itself:
    tests/integration/test_retrain.py)."""
    import shutil

    import yaml

    from andon.settings import default_configs_dir

    shutil.copytree(default_configs_dir(), dest)
    for path in (dest / "plants").glob("*.yaml"):
        if path.stem not in plants:
            path.unlink()
            continue
        doc = yaml.safe_load(path.read_text())
        doc.setdefault("retrain", {})["maintenance_windows"] = [{"start": "00:00", "end": "24:00"}]
        path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    return dest


def _statuses(sent: list[Sent]) -> dict[str, int]:
    return {str(k): v for k, v in sorted(Counter(s.status for s in sent).items())}


def _pg(url: str) -> str:
    """A psycopg2 DSN from a Prefect or MLflow database URL."""
    return "postgresql://" + url.split("://", 1)[1]


def query(url: str, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    import psycopg2

    with psycopg2.connect(_pg(url)) as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        rows = list(cur.fetchall())
    conn.close()
    return rows


def _api(topo: Topology) -> Any:
    import httpx

    from andon.settings import prefect_auth_headers

    return httpx.Client(base_url=topo.prefect_api_url, timeout=30, headers=prefect_auth_headers(topo.settings))


def deploy(topo: Topology) -> None:
    """``andon deploy`` of the topology's configs through the load balancer, then the scheduled
    deployments paused (the retrain deployments keep their triggers)."""
    env = os.environ | topo.client_env()
    cmd = [sys.executable, "-m", "andon.cli", "deploy", "--prefect-api-url", topo.prefect_api_url,
           "--file", str(topo.settings.home / "prefect.yaml")]  # fmt: skip
    done = subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise ServiceError(f"andon deploy failed: {(done.stderr or done.stdout)[-2000:]}")
    with _api(topo) as api:
        deployments = api.post("/deployments/filter", json={"limit": 200}).raise_for_status().json()
        for d in deployments:
            if d["schedules"] and not d["name"].startswith("retrain-"):
                api.post(f"/deployments/{d['id']}/pause_deployment").raise_for_status()


def message(i: int, plant: str, significant: bool) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "message_id": f"drill-{i}-{os.urandom(4).hex()}",
        "plant": plant,
        "line": "line-1",
        "occurred_at": datetime.now(UTC).isoformat(),  # the server vacuums old events
    }
    if significant:
        return msg | {"type": "sku.introduced", "sku": f"DRILL-{i}"}
    new, old = SMALL_SHIFT
    return msg | {"type": "product_mix.changed", "mix": new, "previous_mix": old}


def post_events(topo: Topology, report: DrillReport, events: int, significant: int, kill: str, kill_at: float,
                rate: float) -> None:  # fmt: skip
    import httpx

    from andon.gateway.signing import headers

    assert topo.settings.mes_secret is not None, "the drill signs MES messages: set the MES secret"
    secret = topo.settings.mes_secret.get_secret_value()
    every = max(1, events // max(1, significant))
    report.kill_index = int(events * kill_at)
    with httpx.Client(base_url=topo.gateway_url, timeout=30) as http:
        nxt = time.monotonic()
        for i in range(events):
            if i == report.kill_index:
                waited = time.monotonic()
                wait_until(
                    "a retrain run to be running",
                    lambda: any(r["state_type"] == "RUNNING" for r in retrain_runs(topo)),
                    waited + 300,
                )
                report.seconds["waiting_for_a_running_retrain"] = time.monotonic() - waited
                topo.kill(kill)
                report.killed = kill
                report.at_kill = Counter(str(r["state_name"]) for r in retrain_runs(topo))
                nxt = time.monotonic()
            important = i % every == 0 and i // every < significant
            plant = topo.plants[(i // every) % len(topo.plants)] if important else topo.plants[i % len(topo.plants)]
            body = json.dumps(message(i, plant, important)).encode()
            resp = None
            for attempt in range(2 if i % 20 == 10 else 1):  # 1 in 20: the MES retries
                resp = http.post(
                    "/v1/mes/events", content=body, headers=headers(body, secret, int(time.time()) + attempt)
                )
                report.posts += 1
            assert resp is not None
            event_id = resp.json().get("event_id") if resp.status_code == 202 else None
            report.sent.append(Sent(i, plant, important, resp.status_code, event_id, i >= report.kill_index))
            nxt += 1 / rate
            time.sleep(max(0.0, nxt - time.monotonic()))


def wait_until(what: str, check: Any, deadline: float, detail: Any = None, every: float = 0.5) -> Any:
    """Poll ``check()`` until it returns something truthy; a ServiceError naming ``what`` (and
    ``detail()``, what was seen last) at the deadline."""
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise ServiceError(f"timed out waiting for {what}" + (f": {detail()}" if detail else ""))


def retrain_runs(topo: Topology) -> list[dict[str, Any]]:
    rows = query(
        topo.settings.prefect_database_url,
        "select r.parameters->>'event_id', r.state_type, r.state_name, d.name,"
        " extract(epoch from (r.end_time - r.start_time)) from flow_run r join deployment d on d.id = r.deployment_id"
        " where d.name like 'retrain-%%' and coalesce(r.parameters->>'trigger', '') <> 'schedule'",  # the calendar's
    )
    keys = ("event_id", "state_type", "state_name", "deployment", "seconds")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def run_drill(
    topo: Topology,
    events: int = 200,
    significant: int = 6,
    kill: str = "prefect-api-1",
    kill_at: float = 0.5,
    rate: float = 20.0,
    timeout_s: float = 300.0,
) -> DrillReport:
    """Deploy, post, kill, wait for every event and retrain to settle, count. Raises ServiceError
    when something does not settle by ``timeout_s`` (the report so far is on the exception)."""
    import httpx

    report = DrillReport()
    t0 = time.monotonic()
    deploy(topo)
    report.seconds["deploy"] = time.monotonic() - t0
    t1 = time.monotonic()
    post_events(topo, report, events, significant, kill, kill_at, rate)
    report.seconds["posting"] = time.monotonic() - t1
    deadline = time.monotonic() + timeout_s
    try:

        def delivered() -> bool:
            health = httpx.get(f"{topo.gateway_url}/healthz", timeout=10).json()
            report.gateway = health
            if health["dead"]:
                raise ServiceError(f"the gateway parked {health['dead']} events as undeliverable: {health}")
            return bool(health["pending"] == 0 and health["delivered"] >= len(report.accepted))

        wait_until("the gateway to deliver every accepted event", delivered, deadline, lambda: report.gateway)
        report.seconds["delivered_after_posting"] = time.monotonic() - t1 - report.seconds["posting"]

        def settled() -> bool:
            report.runs = retrain_runs(topo)
            return not report.missing_runs and all(r["state_type"] in TERMINAL for r in report.runs)

        def seen() -> str:
            return f"runs {report.runs}, missing {sorted(report.missing_runs)}"

        wait_until("a finished retrain run for every retrain-worthy event", settled, deadline, seen)
        report.seconds["settled_after_posting"] = time.monotonic() - t1 - report.seconds["posting"]
    except ServiceError as exc:
        exc.report = report  # type: ignore[attr-defined]
        raise
    finally:
        ids = sorted(report.accepted)
        rows = query(topo.settings.prefect_database_url, "select id::text from events where id::text = any(%s)", (ids,))
        report.found = {r[0] for r in rows}
        report.balancer = dict(topo.balancer.connections)
        if topo.settings.gateway_outbox_url.startswith("postgres"):
            lag = "select confirmed_at - received_at from andon_outbox_events where confirmed_at is not null"
            report.lags = [float(r[0]) for r in query(topo.settings.gateway_outbox_url, lag)]
    store = _store(topo)
    for plant in topo.plants:
        for obj in store.list(f"retraining/{plant}/decisions/"):
            report.decisions[str(json.loads(store.get(obj.key)).get("event_id"))] += 1
    return report


def _store(topo: Topology) -> Any:
    from urllib.parse import urlparse

    from andon.storage import S3ObjectStore, open_store

    s = topo.settings
    url = urlparse(s.object_store_url)
    if url.scheme != "s3":
        return open_store(s.object_store_url)
    return S3ObjectStore(url.netloc, url.path, endpoint_url=s.s3_endpoint_url, region=s.s3_region)
