"""Tasks of the monitor flow."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from andon.tasks import link_artifact, transient_only

WINDOWS = {"incremental": None, "hourly": timedelta(hours=1), "nightly": timedelta(hours=24)}


def _emit(event: str, payload: dict[str, Any], key: str) -> None:
    from prefect.events import emit_event

    from andon.events import monitoring_alert

    emit_event(**monitoring_alert(event, payload, key).emit_kwargs())


def scheduled_end() -> str:
    """The end of the window this flow run was scheduled for: its scheduled start time (a run
    started by hand: when it was created), never the time a late worker picked it up."""
    from datetime import UTC

    from prefect.runtime import flow_run

    scheduled = flow_run.scheduled_start_time
    return (scheduled or datetime.now(UTC)).isoformat()


@task(name="run-monitor", retries=1, retry_delay_seconds=5, retry_condition_fn=transient_only)
def run_monitor(
    plant: str,
    kind: str,
    at: str | None = None,
    task: str | None = None,
    window_minutes: int | None = None,
    drift_report: bool | None = None,
) -> dict[str, Any]:
    """The kind's window and report, unless ``window_minutes`` / ``drift_report`` say otherwise."""
    from andon.config import load_plant
    from andon.errors import ConfigError
    from andon.monitoring.monitor import monitor
    from andon.storage import open_store

    if kind not in WINDOWS:
        raise ConfigError(f"monitor kind {kind!r}: one of {', '.join(WINDOWS)}")
    result = monitor(
        open_store(),
        load_plant(plant),
        end=datetime.fromisoformat(at) if at else None,
        window=timedelta(minutes=window_minutes) if window_minutes else WINDOWS[kind],
        drift_report=kind != "incremental" if drift_report is None else drift_report,
        emit=_emit,
        task=task,
    )
    return {**asdict(result), "start": result.start.isoformat(), "end": result.end.isoformat()}


@task(name="queue-for-labeling", retries=1, retry_delay_seconds=5, retry_condition_fn=transient_only)
def queue_for_labeling(plant: str, start: str, end: str) -> dict[str, int]:
    """Active learning after each scoring window: the uncertain, diverse parts and the reviewed-wrong ones."""
    from andon.config import load_plant
    from andon.labeling.queue import queue_window
    from andon.storage import open_store

    return queue_window(open_store(), load_plant(plant), datetime.fromisoformat(start), datetime.fromisoformat(end))


@task(name="publish-monitoring")
def publish_monitoring(result: dict[str, Any]) -> None:
    plant = result["plant"]
    rows = [
        {k: v[k] for k in ("series", "kind", "value", "reference", "n", "z", "status")}
        | {"rules": ",".join(v["rules"])}
        for v in result["verdicts"]
    ]
    create_table_artifact(key=f"{plant}-monitoring", table=rows, description=f"{plant}: monitored series")
    if result["drift_scores"]:
        create_table_artifact(
            key=f"{plant}-drift-scores",
            table=[{"feature": k, "drift_score": round(v, 4)} for k, v in sorted(result["drift_scores"].items())],
            description="Evidently per-feature drift scores",
        )
    if result["drift_report_key"]:
        from andon.storage import open_store

        text = f"Evidently drift report ({result['drift_share']:.2f} of features drifted)"
        link_artifact(f"{plant}-drift-report", open_store(), result["drift_report_key"], text)
    breaches = [v for v in result["verdicts"] if v["status"] in ("breach", "active")]
    lines = [
        f"# {plant}: {result['model']} v{result['version']}, {result['parts']} parts, {result['reviewed']} reviewed",
        "",
        f"- window {result['start']} .. {result['end']}",
        f"- breaches: {', '.join(v['series'] for v in breaches) or 'none'}",
        f"- alerts opened: {', '.join(a['id'] for a in result['alerts']) or 'none'}",
    ]
    if result.get("charts_key"):
        lines.append(f"- control charts: `{result['charts_key']}`")
    create_markdown_artifact(key=f"{plant}-monitoring-summary", markdown="\n".join(lines))
