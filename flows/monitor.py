"""Monitor a plant's champion: every 5 minutes the cheap statistics and control charts
(``incremental``), hourly with the Evidently drift report (``hourly``), nightly over 24 h
(``nightly``). Breaches emit andon.drift.detected / andon.performance.degraded. ``task``
picks the model: the plant's vision champion (default) or its sensor model (machine-failure).
The incremental run also queues the window's most informative parts for labeling.

A run charts the window it was scheduled for: ``at`` defaults to the flow run's scheduled start,
so runs queued while no worker was up each chart their own window when they finally run.
``window_minutes`` and ``drift_report`` override the kind's window and report (``andon monitor
--window 30m`` runs this flow so); a run with either set queues nothing for labeling."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from prefect import flow
from pydantic import Field

from andon.tasks.monitoring import publish_monitoring, queue_for_labeling, run_monitor, scheduled_end

# the kinds of run (tasks.monitoring.WINDOWS) and the models: choices in the UI, checked by Prefect
MonitorKind = Literal["incremental", "hourly", "nightly"]
WEEK_MINUTES = 7 * 24 * 60


@flow(name="monitor", flow_run_name="{plant} monitor {kind}", timeout_seconds=30 * 60)
def monitor_flow(
    plant: str,
    kind: MonitorKind = "incremental",
    at: str | None = None,
    task: Literal["machine-failure"] | None = None,
    window_minutes: Annotated[int, Field(ge=1, le=WEEK_MINUTES)] | None = None,
    drift_report: bool | None = None,
) -> dict[str, Any]:
    result = run_monitor(plant, kind, at or scheduled_end(), task, window_minutes, drift_report)
    publish_monitoring(result)
    scheduled = window_minutes is None and drift_report is None
    if kind == "incremental" and task is None and scheduled:  # after each scoring window: parts worth a look
        result["labeling"] = queue_for_labeling(plant, result["start"], result["end"])
    return result
