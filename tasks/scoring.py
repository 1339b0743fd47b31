"""Tasks of batch scoring."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact

from andon.tasks import transient_only


@task(name="score-raw-batch", retries=1, retry_delay_seconds=5, retry_condition_fn=transient_only)
def score_raw_batch(plant: str, batch: str) -> dict[str, Any]:
    from andon.config import load_plant
    from andon.scoring.batch import score_batch
    from andon.storage import open_store

    summary = score_batch(open_store(), load_plant(plant), batch)
    return {**asdict(summary), "parts_per_s": summary.parts_per_s}


@task(name="publish-scoring")
def publish_scoring(summary: dict[str, Any]) -> None:
    lines = [
        f"# {summary['plant']}: {summary['scored']} parts scored by {summary['model']} v{summary['version']}",
        "",
        f"- batch `{summary['batch']}`",
        f"- predicted defects: {summary['defects']}; explained: {summary['explained']}; "
        f"error rows (bad images): {summary['errors']}",
        f"- {summary['parts_per_s']:.0f} parts/s; log files: {len(summary['log_keys'])}",
    ]
    create_markdown_artifact(key=f"{summary['plant']}-scoring", markdown="\n".join(lines))
