"""The plants' deployments applied to a real Prefect server with `andon deploy` (`prefect deploy`
under the hood), and the whole event path: a signed MES message at the gateway becomes a retrain
run of exactly that plant, with the event's parameters."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from andon.cli.main import app
from andon.config import load_plant
from andon.gateway.app import Gateway, create_app
from andon.gateway.forwarder import Forwarder
from andon.gateway.outbox import Outbox
from andon.gateway.signing import headers
from andon.httpkit import run_in_thread

SECRET = "e2e-secret-of-at-least-32-bytes-long"


def _api_url() -> str:
    from prefect.settings import PREFECT_API_URL

    return str(PREFECT_API_URL.value()).rstrip("/")


def _runs_of(client: Any, deployment_id: Any) -> list[Any]:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    return list(client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))))


@pytest.fixture(scope="module")
def deployed(prefect_harness: None) -> dict[str, Any]:
    from prefect import get_client

    result = CliRunner().invoke(app, ["deploy", "--prefect-api-url", _api_url()])
    assert result.exit_code == 0, result.output + str(result.exception)
    with get_client(sync_client=True) as client:
        return {
            name: client.read_deployment_by_name(name)
            for name in (
                "retrain/retrain-plant-a",
                "retrain/retrain-plant-b",
                "monitor/monitor-plant-b",
                "monitor/monitor-hourly-plant-a",
                "monitor/drift-nightly-plant-c",
                "score-batch/score-plant-c",
                "validate-batch/validate-plant-a",
            )
        }


def test_deploy_applies_every_plants_schedules_and_limits(deployed: dict[str, Any]) -> None:
    every5 = deployed["monitor/monitor-plant-b"]
    (sched,) = every5.schedules
    assert sched.schedule.interval == timedelta(minutes=5) and sched.schedule.timezone == "America/Chicago"
    assert every5.parameters == {"plant": "plant-b", "kind": "incremental"}
    (hourly,) = deployed["monitor/monitor-hourly-plant-a"].schedules
    assert hourly.schedule.cron == "5 * * * *" and hourly.schedule.timezone == "Europe/Berlin"
    (nightly,) = deployed["monitor/drift-nightly-plant-c"].schedules
    assert nightly.schedule.cron == "30 2 * * *" and nightly.schedule.timezone == "Asia/Kolkata"
    retrain = deployed["retrain/retrain-plant-a"]
    assert retrain.work_pool_name == "andon-plant-a"
    from andon.settings import REPO_ROOT  # workers run the flows from this checkout

    assert retrain.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO_ROOT)}}]
    (every14,) = retrain.schedules  # the scheduled retrain, which still needs new labels
    assert every14.schedule.interval == timedelta(days=14) and every14.parameters == {"trigger": "schedule"}
    assert retrain.global_concurrency_limit.limit == 1
    assert str(retrain.concurrency_options.collision_strategy).endswith("ENQUEUE")
    # typed parameter forms in the UI: the flow's signature became the schema
    props = retrain.parameter_openapi_schema["properties"]
    assert set(props) == {"plant", "task", "trigger", "event_id", "details"}

    # deploying again replaces the triggers' automations, never duplicates them
    from prefect import get_client

    def automations_of(deployment_id: Any) -> int:
        with get_client(sync_client=True) as client:
            every = client.read_automations(limit=200)  # the server's page; 3 plants x 6 triggers here
        return sum(any(getattr(a, "deployment_id", None) == deployment_id for a in x.actions) for x in every)

    assert automations_of(retrain.id) == 6
    again = CliRunner().invoke(app, ["deploy", "--prefect-api-url", _api_url()])
    assert again.exit_code == 0 and "0 added, 0 removed, 0 changed" in again.stdout, again.output
    assert automations_of(retrain.id) == 6


def _post(client: Any, msg: dict[str, Any]) -> dict[str, Any]:
    body = json.dumps(msg).encode()
    resp = client.post("/v1/mes/events", content=body, headers=headers(body, SECRET))
    assert resp.status_code == 202, resp.text
    return dict(resp.json())


def test_a_signed_sku_event_starts_that_plants_retrain_with_its_parameters(
    deployed: dict[str, Any], tmp_path: Path
) -> None:
    import httpx
    from prefect import get_client

    box = Outbox(f"sqlite:///{tmp_path / 'outbox.db'}")
    forwarder = Forwarder(box, _api_url())
    gw = Gateway(box, {p: load_plant(p) for p in ("plant-a", "plant-b")}, SECRET, forwarder)
    forwarder.start()
    ids = {"a": deployed["retrain/retrain-plant-a"].id, "b": deployed["retrain/retrain-plant-b"].id}
    try:
        with (
            run_in_thread(create_app(gw)) as url,
            httpx.Client(base_url=url) as http,
            get_client(sync_client=True) as client,
        ):
            t0 = time.monotonic()
            sku = {"type": "sku.introduced", "message_id": f"e2e-{time.time_ns()}", "plant": "plant-a",
                   "line": "line-2", "occurred_at": "2026-11-26T09:00:00Z", "sku": "IMP-400"}  # fmt: skip
            answer = _post(http, sku)
            small_mix = {"type": "product_mix.changed", "message_id": f"e2e-mix-{time.time_ns()}", "plant": "plant-b",
                         "occurred_at": "2026-11-26T09:00:00Z", "mix": {"A": 0.55, "B": 0.45},
                         "previous_mix": {"A": 0.5, "B": 0.5}}  # fmt: skip
            mix_answer = _post(http, small_mix)  # a 5 % shift, under plant-b's threshold: no retrain

            def mine(dep: str, event_id: str) -> list[Any]:
                return [r for r in _runs_of(client, ids[dep]) if r.parameters.get("event_id") == event_id]

            runs: list[Any] = []
            while time.monotonic() - t0 < 10 and not runs:
                runs = mine("a", answer["event_id"])
                time.sleep(0.2)
            elapsed = time.monotonic() - t0
            assert runs, "no retrain run for plant-a within 10 s of the MES event"
            (run,) = runs
            assert run.parameters["plant"] == "plant-a" and run.parameters["task"] == "vision"
            assert run.parameters["trigger"] == "mes.sku.introduced"
            assert run.parameters["details"]["sku"] == "IMP-400" and run.parameters["details"]["line"] == "line-2"
            _wait_delivered(box, 2)
            time.sleep(2)  # give a wrong trigger time to fire
            assert mine("b", answer["event_id"]) == [] and mine("b", mix_answer["event_id"]) == []
            assert len(mine("a", answer["event_id"])) == 1  # one event, one run
    finally:
        forwarder.stop()
    print(f"MES event -> retrain run: {elapsed:.2f} s")


def _wait_delivered(box: Outbox, n: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while box.counts()["delivered"] < n:
        assert time.monotonic() < deadline, box.counts()
        time.sleep(0.2)
