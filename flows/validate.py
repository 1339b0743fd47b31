"""The data gate: a raw batch is validated, then accepted into a dataset version or quarantined."""

from __future__ import annotations

from typing import Any

from prefect import flow

from andon.tasks.validation import emit_batch_event, publish_validation, validate_raw_batch


@flow(name="validate-batch", flow_run_name="{plant} validate {batch}", timeout_seconds=3600)
def validate_batch_flow(plant: str, batch: str) -> dict[str, Any]:
    """``batch``: the raw batch prefix, e.g. ``plant-b/line-1/raw/2026-11-26/20261126T060000Z-s0``."""
    result = validate_raw_batch(plant, batch)
    publish_validation(result)
    emit_batch_event(result)
    return result
