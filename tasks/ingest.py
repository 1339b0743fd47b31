"""Tasks that bring parts into the object store."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from prefect import task
from prefect.artifacts import create_table_artifact

from andon.tasks import transient_only


@task(name="synthesize-parts", retries=2, retry_delay_seconds=5, retry_condition_fn=transient_only)
def synthesize_parts(
    plant: str,
    parts: int,
    seed: int,
    start: datetime | None,
    drift: dict[str, Any] | None,
    defect_rate: float | None = None,
    purpose: str = "production",
) -> list[dict[str, Any]]:
    from andon.config import load_plant
    from andon.storage import open_store
    from andon.synth.images import Drift
    from andon.synth.plant import synthesize_plant

    batches = synthesize_plant(
        load_plant(plant),
        open_store(),
        parts,
        seed=seed,
        start=start,
        drift=Drift(**(drift or {})),
        defect_rate=defect_rate,
        purpose=purpose,
    )
    return [asdict(b) for b in batches]


@task(name="ingest-folder", retries=2, retry_delay_seconds=5, retry_condition_fn=transient_only)
def ingest_images(
    plant: str,
    path: str,
    limit: int | None,
    start: datetime | None,
    batch_size: int | None = None,
    mixed: bool = False,
    purpose: str = "production",
) -> list[dict[str, Any]]:
    from andon.config import load_plant
    from andon.data.ingest import ingest_folder
    from andon.storage import open_store

    batches = ingest_folder(
        load_plant(plant),
        open_store(),
        path,
        limit=limit,
        start=start,
        batch_size=batch_size,
        mixed=mixed,
        purpose=purpose,
    )
    return [asdict(b) for b in batches]


@task(name="publish-batches")
def publish_batches(plant: str, batches: list[dict[str, Any]], what: str) -> None:
    """A table artifact listing the raw batches a run wrote."""
    rows = [
        {
            "line": b["line"],
            "batch": b["batch_id"],
            "purpose": b.get("purpose", "production"),
            "parts": b["parts"],
            "defects": b["defects"],
            "prefix": b["prefix"],
        }
        for b in batches
    ]
    create_table_artifact(
        key=f"{plant}-raw-batches",
        table=rows,
        description=f"{what}: {sum(b['parts'] for b in batches)} parts in {len(batches)} raw batch(es) at {plant}",
    )
