"""Tasks of the validation gate."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from andon.tasks import link_artifact, transient_only


@task(name="validate-raw-batch", retries=2, retry_delay_seconds=5, retry_condition_fn=transient_only)
def validate_raw_batch(plant: str, batch: str) -> dict[str, Any]:
    from andon.config import load_plant
    from andon.storage import open_store
    from andon.validation.gate import run_gate
    from andon.validation.profile import load_profile

    result = run_gate(open_store(), load_plant(plant), batch, profile=load_profile(plant))
    return result.as_dict()


@task(name="publish-validation")
def publish_validation(result: dict[str, Any]) -> None:
    """Markdown summary, a table of failed expectations, and a link to the HTML report."""
    from andon.storage import open_store

    plant, verdict = result["plant"], result["verdict"]
    failed = [
        {
            "table": rep["table"],
            "rule": r["rule"],
            "failing rows": r["unexpected_count"],
            "observed": str(r["observed"])[:80] if r["observed"] is not None else "",
            "example": str(r["examples"][:1])[:120],
        }
        for rep in result["reports"]
        for r in rep["results"]
        if not r["success"]
    ]
    total = sum(len(rep["results"]) for rep in result["reports"])
    lines = [
        f"# Batch `{result['batch_id']}` at {plant} / {result['line']}: **{verdict.upper()}**",
        "",
        f"- raw batch: `{result['batch_prefix']}/` ({result['parts']} parts)",
        f"- rules: {total - len(failed)} of {total} passed; learned profile v{result['profile_version'] or '-'}",
    ]
    if result["manifest_id"]:
        lines.append(f"- dataset version: `{result['manifest_id']}`")
    if result["quarantine_prefix"]:
        lines.append(f"- quarantined copy: `{result['quarantine_prefix']}/` (raw batch untouched)")
    create_markdown_artifact(key=f"{plant}-validation", markdown="\n".join(lines), description=verdict)
    if failed:
        create_table_artifact(key=f"{plant}-failed-expectations", table=failed, description=result["batch_id"])
    link_artifact(f"{plant}-validation-report", open_store(), result["report_key"], f"report: {result['batch_id']}")


@task(name="emit-batch-event")
def emit_batch_event(result: dict[str, Any]) -> str:
    from prefect.events import emit_event

    from andon import events

    name = events.BATCH_VALIDATED if result["verdict"] == "accepted" else events.BATCH_QUARANTINED
    eid = events.event_id(name, result["batch_prefix"], result["manifest_id"] or result["validated_at"])
    emit_event(
        event=name,
        resource=events.plant_resource(result["plant"], result["line"]),
        id=eid,
        payload={
            "batch": result["batch_prefix"],
            "batch_id": result["batch_id"],
            "manifest_id": result["manifest_id"],
            "quarantine_prefix": result["quarantine_prefix"],
            "failed_rules": result["failed_rules"],
            "report_key": result["report_key"],
        },
    )
    return name
