"""Train a challenger from validated datasets; promote it if it beats the champion."""

from __future__ import annotations

from typing import Any

from prefect import flow

from andon.tasks.training import (
    promote_challenger,
    publish_promotion,
    publish_training,
    train_sensor_version,
    train_version,
)


@flow(name="train", flow_run_name="{plant} train", timeout_seconds=4 * 3600)
def train_flow(plant: str, dataset_ids: list[str], parent_version: int | None = None) -> dict[str, Any]:
    outcome = train_version(plant, dataset_ids, parent_version)
    publish_training(outcome)
    return outcome


@flow(name="train-sensor", flow_run_name="{plant} train-sensor", timeout_seconds=2 * 3600)
def train_sensor_flow(
    plant: str, table_key: str, spec: str = "ai4i2020", hold_out: list[str] | None = None
) -> dict[str, Any]:
    """The machine-failure model from a sensor table in the object store (``table_key``)."""
    return train_sensor_version(plant, table_key, spec, hold_out or [])


@flow(name="promote", flow_run_name="{plant} promote", timeout_seconds=3600)
def promote_flow(plant: str, force: bool = False, reason: str = "") -> dict[str, Any]:
    decision = promote_challenger(plant, force, reason)
    publish_promotion(plant, decision)
    return decision
