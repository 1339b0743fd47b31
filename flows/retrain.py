"""Retrain because something happened (MES event, drift, degraded accuracy, schedule or a person):
policy -> (vision) current dataset + new labels through the gate -> fine-tune from the champion ->
promotion gate, or (sensor) learn the logged failure type -> result event. A skipped retrain
says why (artifact, champion tags, andon.retrain.finished)."""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow

from andon.tasks.retraining import (
    announce_retrain,
    collect_training_data,
    fine_tune,
    publish_policy,
    record_labels_used,
    retrain_policy,
    retrain_sensor_model,
)
from andon.tasks.training import promote_challenger, publish_promotion, publish_training

# what starts a retrain: a person, the schedule, or one of the events the deployment's triggers match
Trigger = Literal[
    "manual",
    "schedule",
    "mes.sku.introduced",
    "mes.failure_type.logged",
    "mes.product_mix.changed",
    "mes.line.reconfigured",
    "andon.drift.detected",
    "andon.performance.degraded",
]


# one run at a time per plant (the deployment's concurrency limit, ENQUEUE): a hung run must end
@flow(name="retrain", flow_run_name="{plant} retrain {task} on {trigger}", timeout_seconds=4 * 3600)
def retrain_flow(
    plant: str,
    task: Literal["vision", "machine-failure"] = "vision",
    trigger: Trigger = "manual",
    event_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``task``: vision (the camera model) or machine-failure (the sensor model); ``trigger``:
    the event name that started the run (manual from the UI); ``details``: the event payload."""
    details = details or {}
    decision = retrain_policy(plant, task, trigger, event_id, details)
    publish_policy(decision)
    result: dict[str, Any] = {}
    if decision["go"] and task == "machine-failure":
        sensor = retrain_sensor_model(plant, details["failure_type"])
        result |= {"sensor": sensor, "version": sensor["version"], "promoted": sensor["promoted"]}
    elif decision["go"]:
        data = collect_training_data(plant)
        outcome = fine_tune(plant, data["dataset_id"], trigger, event_id)
        publish_training(outcome)
        record_labels_used(plant, data["part_ids"], outcome["model_name"], outcome["version"])
        promotion = promote_challenger(plant, False, f"retrain on {trigger}")
        publish_promotion(plant, promotion)
        result |= {"dataset": data, "version": outcome["version"], "promoted": promotion["passed"]}
    announce_retrain(plant, decision, {k: v for k, v in result.items() if k in ("version", "promoted")})
    return {"decision": decision, **result}
