"""Score a raw batch with the plant's champion into the prediction log."""

from __future__ import annotations

from typing import Any

from prefect import flow

from andon.tasks.scoring import publish_scoring, score_raw_batch


@flow(name="score-batch", flow_run_name="{plant} score {batch}", timeout_seconds=3600)
def score_batch_flow(plant: str, batch: str) -> dict[str, Any]:
    summary = score_raw_batch(plant, batch)
    publish_scoring(summary)
    return summary
