"""Stage machinery of the demo: plant workers started only while a run is expected, schedules
switched off, waiting for a triggered run, reviewing parts, and the lines the chapters print."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from andon.errors import AndonError

if TYPE_CHECKING:
    from rich.console import Console


from andon.cli.demo.base import RATE_KEYS, TASK, Demo, rates


def central_line(out: dict[str, Any]) -> str:
    from andon.quality import fmt_rate

    head = (
        f"{out['model']} v{out['version']}: held-out escape {fmt_rate(out['escape_rate'])}, overkill "
        f"{fmt_rate(out['overkill_rate'])} (accuracy {out['accuracy']:.3f})"
    )
    if out["champion"]:
        return head + ", the central champion"
    if out["previous"] is not None:
        return head + f", kept as a candidate (v{out['previous']} stays champion)"
    return head + ", [red]refused by the gate[/]: the plants train from scratch"


def parent_name(plant: str, version: int) -> str:
    from andon.lifecycle.registry import model_name, version_info

    return version_info(model_name(plant, TASK), version).tags.get("parent_version", "")


def on_parts(d: Demo, plant: str, batches: list[dict[str, Any]], *versions: int | None) -> dict[str, Any]:
    """Escape and overkill of ``versions`` (each at its own operating point) on the reviewed parts
    of ``batches``: what the floor saw, before and after the retrain."""
    from andon.config import load_plant
    from andon.data.batches import parquet_to_frame
    from andon.lifecycle.promotion import evaluate_version

    objects = []
    for b in batches:
        meta = parquet_to_frame(d.store.get(f"{b['prefix']}/metadata.parquet"))
        objects += [{"key": r.image_key, "sha256": r.sha256, "label": r.label} for r in meta.itertuples()]
    out: dict[str, Any] = {"parts": len(objects), "defects": sum(o["label"] != "ok" for o in objects)}
    for v in dict.fromkeys(x for x in versions if x is not None):
        m = evaluate_version(d.store, load_plant(plant), v, objects)
        out[f"v{v}"] = {k: m[k] for k in RATE_KEYS}
        d.say(f"  on the dark shift's {out['parts']} reviewed parts, v{v}: {rates(m)}")
    return out


def worker_env(d: Demo) -> dict[str, str]:
    from andon.settings import REPO_ROOT

    env = dict(os.environ)
    env |= {
        "PREFECT_API_URL": d.settings.prefect_api_url,
        "ANDON_REPO_ROOT": str(REPO_ROOT),
        "ANDON_HOME": str(d.settings.home),
        "ANDON_CONFIGS_DIR": str(d.settings.configs_dir),
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_LOGGING_LEVEL": "INFO",
    }
    return env


@contextmanager
def plant_worker(d: Demo, plant: str) -> Iterator[None]:
    """A process worker on the plant's pool (what `prefect worker start` runs in production)."""
    log = d.settings.home / "logs" / f"worker-{plant}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as fh:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "prefect",
                "worker",
                "start",
                "--pool",
                f"andon-{plant}",
                "--type",
                "process",
                "--limit",
                "1",
                "--name",
                f"demo-{plant}",
            ],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=worker_env(d),
            start_new_session=True,
        )
    try:
        yield
    finally:  # the worker and the flow-run processes it started (its own process group)
        import signal

        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def schedules_off(plants: tuple[str, ...]) -> int:
    """Switch the plants' deployment schedules off and drop the runs they already scheduled."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        DeploymentFilterTags,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    count = 0
    with get_client(sync_client=True) as client:
        deps = client.read_deployments(
            deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(any_=[f"plant:{p}" for p in plants]))
        )
        for dep in deps:
            for sched in dep.schedules:
                if sched.active:
                    client.update_deployment_schedule(dep.id, sched.id, active=False)
                    count += 1
        scheduled = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id for dep in deps])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))
            ),
        )
        for run in scheduled:
            if run.auto_scheduled:
                client.delete_flow_run(run.id)
    return count


def wait_for_run(d: Demo, plant: str, since: datetime, trigger: str) -> dict[str, Any]:
    """The run the automation created for the plant's retrain deployment after ``since``, followed
    to its end."""
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    deployment = f"retrain/retrain-{plant}"
    deadline = time.monotonic() + d.size.run_timeout_s
    run = None
    with (
        get_client(sync_client=True) as client,
        d.console.status(f"waiting for Prefect to start {deployment}...") as st,
    ):
        dep = client.read_deployment_by_name(deployment)
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])),
                sort=FlowRunSort.EXPECTED_START_TIME_DESC,
                limit=20,
            )
            runs = [r for r in runs if r.created and r.created >= since - timedelta(seconds=5)]
            runs = [r for r in runs if r.parameters.get("trigger") == trigger]
            if runs:
                run = runs[0]
                state = run.state.name if run.state else "?"
                st.update(f"{deployment}: run {run.name} is {state} (the plant's worker runs it)...")
                if run.state and run.state.is_final():
                    break
            time.sleep(2)
    ui = d.settings.prefect_api_url.removesuffix("/api")
    if run is None:
        raise AndonError(
            f"no {deployment} run within {d.size.run_timeout_s:.0f} s of the {trigger} event: see the event "
            f"({ui}/events) and the automation ({ui}/automations)"
        )
    state = run.state.name if run.state else "?"
    if not (run.state and run.state.is_final()):
        from prefect.states import Cancelled

        with get_client(sync_client=True) as client:  # it holds the deployment's one concurrency slot
            client.set_flow_run_state(run.id, Cancelled(message="the demo stopped waiting"), force=True)
        log = d.settings.home / "logs" / f"worker-{plant}.log"
        raise AndonError(
            f"{deployment} run {run.name} still {state} after {d.size.run_timeout_s:.0f} s (cancelled); "
            f"its worker's log: {log}"
        )
    d.say(f"Prefect ran {deployment} ({run.name}) from the {trigger} event: {state}; {ui}/runs/flow-run/{run.id}")
    if not (run.state and run.state.is_completed()):
        raise AndonError(f"{deployment} ended {state}: see {ui}/runs/flow-run/{run.id} and the worker log")
    return {"run_id": str(run.id), "run_name": run.name, "state": state}


def retrain_outcome(d: Demo, plant: str, before: int | None, run: dict[str, Any]) -> dict[str, Any]:
    """What the retrain run decided, read back from where it recorded it (policy state, registry)."""
    from andon.lifecycle.registry import list_versions, model_name
    from andon.lifecycle.retraining import load_state

    decisions = load_state(d.store, plant)
    last: dict[str, Any] = max(decisions["events"].values(), key=lambda e: e["at"], default={})
    policy = str(last.get("summary", "?"))
    d.say(f"the retrain policy: {policy}")
    after = champion_of(plant)
    newest = list_versions(model_name(plant, TASK))[-1]
    if after != before:
        why = newest.tags.get("promotion.reason", "")
        d.say(f"[green]v{after} passed the gate[/] and is champion (was v{before}): {why}")
    elif newest.version != before:
        d.say(
            f"[yellow]the gate kept v{before}[/]: v{newest.version} {newest.tags.get('promotion_refused.reason', '')}"
        )
    return {
        "run": run,
        "policy": policy,
        "champion_before": before,
        "champion_after": after,
        "promoted": after != before,
        "newest": newest.version,
    }


def champion_of(plant: str) -> int | None:
    from andon.lifecycle.registry import CHAMPION, alias_version, model_name

    return alias_version(model_name(plant, TASK), CHAMPION)


def review(d: Demo, plant: str, batches: list[dict[str, Any]]) -> int:
    """QA reviews the parts: the true label from the batch metadata, as a person would give it."""
    from andon.data.batches import parquet_to_frame
    from andon.labeling.labels import ReviewLog

    now = datetime.now(UTC)
    rows = []
    for b in batches:
        meta = parquet_to_frame(d.store.get(f"{b['prefix']}/metadata.parquet"))
        rows += [
            {"part_id": r.part_id, "label": r.label, "reviewed_at": now, "reviewer": "qa-demo"}
            for r in meta.itertuples()
        ]
    ReviewLog(d.store, plant).append(rows)
    return len(rows)


def progress_bar(console: Console) -> Any:
    """A bar that stays in the story (the CLI's own bars are transient, on stderr)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )
