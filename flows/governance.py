"""Federated governance: the central baseline from the plants' pooled datasets, and a plant's
fine-tune from it (its own data and overrides, its own gate, metrics reported to the center)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from andon.tasks.governance import (
    cross_plant_report,
    fine_tune_from_central,
    policy_check,
    publish_contributions,
    report_to_center,
    train_central_baseline,
)
from andon.tasks.training import promote_challenger, publish_promotion, publish_training


@flow(name="central-baseline", flow_run_name="central baseline", timeout_seconds=8 * 3600)
def central_baseline_flow(contributions: dict[str, list[str]]) -> dict[str, Any]:
    """``contributions``: plant -> dataset version ids the plant contributes (by reference)."""
    publish_contributions(contributions)
    return train_central_baseline(contributions)


@flow(name="fine-tune", flow_run_name="{plant} fine-tune", timeout_seconds=4 * 3600)
def fine_tune_flow(plant: str, dataset_ids: list[str]) -> dict[str, Any]:
    outcome = fine_tune_from_central(plant, dataset_ids)
    publish_training(outcome)
    decision = promote_challenger(plant, False, "fine-tuned from the central baseline")
    publish_promotion(plant, decision)
    report_to_center(plant, outcome, decision["passed"])
    return {"training": outcome, "promotion": decision}


@flow(name="governance-report", flow_run_name="governance report", timeout_seconds=3600)
def governance_report_flow(plants: list[str] | None = None) -> dict[str, Any]:
    """The center's day: the policy check across plants, then the cross-plant report."""
    findings = policy_check(plants)
    report = cross_plant_report(plants)
    return {"findings": findings, **report}
