"""Bring parts into a plant's raw layout: synthetic production or a real labelled folder."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import flow
from pydantic import BaseModel, Field

from andon.synth import DRIFT_LIMITS
from andon.tasks.ingest import ingest_images, publish_batches, synthesize_parts


def _knob(name: str, default: float) -> Any:
    lo, hi = DRIFT_LIMITS[name]  # the one range of each knob
    return Field(default=default, ge=lo, le=hi)


class DriftParams(BaseModel):
    """Floor changes to simulate (neutral values = none); shown as a form in the Prefect UI."""

    brightness: float = _knob("brightness", 1.0)
    gamma: float = _knob("gamma", 1.0)
    unevenness: float = _knob("unevenness", 0.0)
    rotation_deg: float = _knob("rotation_deg", 0.0)
    blur_sigma: float = _knob("blur_sigma", 0.0)
    noise_std: float = _knob("noise_std", 0.0)


@flow(name="synthesize-plant", flow_run_name="{plant} synthesize {parts} parts", timeout_seconds=4 * 3600)
def synthesize_plant_flow(
    plant: str,
    parts: int = 2000,
    seed: int = 0,
    start: datetime | None = None,
    drift: DriftParams | None = None,
    defect_rate: float | None = Field(default=None, ge=0, le=1),
    curated: bool = False,
) -> list[dict[str, Any]]:
    """``defect_rate``: override the plant's rate; ``curated``: a training set made on purpose
    (with a defect rate above the line's: defect-enriched), recorded as such by the gate."""
    drift_knobs = drift.model_dump() if drift else None
    batches = synthesize_parts(
        plant, parts, seed, start, drift_knobs, defect_rate, "curated" if curated else "production"
    )
    publish_batches(plant, batches, "a curated training set" if curated else "synthetic production")
    return batches


@flow(name="ingest-folder", flow_run_name="{plant} ingest {path}", timeout_seconds=4 * 3600)
def ingest_folder_flow(
    plant: str,
    path: str,
    limit: int | None = None,
    start: datetime | None = None,
    batch_size: int | None = None,
    mixed: bool = False,
    curated: bool = False,
) -> list[dict[str, Any]]:
    """``batch_size``: parts per raw batch (default: the plant's data.batch_size); ``mixed``: labels
    interleaved in a fixed order, as a line makes parts (default: sorted by folder); ``curated``: a
    training set put together on purpose (its defect share is recorded, not held to the line's)."""
    batches = ingest_images(plant, path, limit, start, batch_size, mixed, "curated" if curated else "production")
    publish_batches(plant, batches, f"ingest of {path}")
    return batches
