"""Retrain because something happened (MES event, drift, degraded accuracy, schedule or a person):
policy -> (vision) current dataset + new labels through the gate -> fine-tune from the champion ->
promotion gate, or (sensor) learn the logged failure type -> result event. A skipped retrain
says why (artifact, champion tags, andon.retrain.finished)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from tasks.retraining import (
    announce_retrain,
    collect_training_data,
    fine_tune,
    publish_policy,
    record_labels_used,
    retrain_policy,
    retrain_sensor_model,
)
from tasks.training import promote_challenger, publish_promotion, publish_training


@flow(name="retrain")
def retrain_flow(
    plant: str,
    task: str = "vision",
    trigger: str = "manual",
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
