"""Tasks of the governance flows (central baseline, plant fine-tuning, policy, report)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from andon.tasks import library_logs_to_run, link_artifact, transient_only


@task(name="publish-contributions")
def publish_contributions(contributions: dict[str, list[str]]) -> list[dict[str, Any]]:
    """The plants' anonymized dataset summaries (hashes, label counts, image statistics)."""
    from andon.config import load_plant
    from andon.governance.central import publish_summary
    from andon.storage import open_store

    store = open_store()
    out = []
    for plant, ids in contributions.items():
        for mid in ids:
            s = publish_summary(store, load_plant(plant), mid)
            out.append({"plant": plant, "manifest": mid[:12], "objects": s["objects"], **s["label_counts"]})
    create_table_artifact(
        key="central-contributions", table=out, description="what each plant contributed (anonymized)"
    )
    return out


@task(name="train-central", retries=1, retry_delay_seconds=10, retry_condition_fn=transient_only)
def train_central_baseline(contributions: dict[str, list[str]]) -> dict[str, Any]:
    library_logs_to_run()
    from andon.governance.central import pool, train_central
    from andon.storage import open_store

    store = open_store()
    central = train_central(store, pool(store, contributions))
    outcome = asdict(central)
    verdict = "champion" if outcome["champion"] else "kept as a candidate"
    create_markdown_artifact(
        key="central-baseline",
        markdown=f"# {outcome['model']} v{outcome['version']}: {verdict}\n\n{central.summary()} "
        f"(previous champion: {outcome['previous']})",
    )
    return outcome


@task(name="fine-tune-from-central", retries=1, retry_delay_seconds=10, retry_condition_fn=transient_only)
def fine_tune_from_central(plant: str, dataset_ids: list[str]) -> dict[str, Any]:
    library_logs_to_run()
    from andon.config import load_plant
    from andon.governance.central import fine_tune
    from andon.storage import open_store

    return asdict(fine_tune(open_store(), load_plant(plant), dataset_ids))


@task(name="report-to-center")
def report_to_center(plant: str, outcome: dict[str, Any], promoted: bool) -> str:
    from andon.config import load_plant
    from andon.governance.central import report_back
    from andon.training.run import TrainOutcome

    return report_back(load_plant(plant), TrainOutcome(**outcome), promoted)


@task(name="governance-report")
def cross_plant_report(plants: list[str] | None) -> dict[str, Any]:
    from andon.config import list_plants, load_plant
    from andon.governance.report import build_report, save_report
    from andon.storage import open_store

    store = open_store()
    report = build_report(store, [load_plant(p) for p in (plants or list_plants())])
    key = save_report(store, report)
    create_table_artifact(key="governance-plants", table=report.table(), description="champions across plants")
    if report.settings:
        rows = [{**r, "plants": ", ".join(r["plants"]), "value": str(r["value"])} for r in report.settings]
        create_table_artifact(key="governance-settings", table=rows, description="which recipe settings travel")
    link_artifact("governance-report", store, key, "cross-plant report (HTML)")
    return {"key": key, "plants": report.table(), "matrix": report.matrix, "seconds": report.seconds}


@task(name="policy-check")
def policy_check(plants: list[str] | None) -> list[dict[str, str]]:
    from andon.config import list_plants, load_plant
    from andon.governance.policy import check_all
    from andon.storage import open_store

    findings = [f.as_dict() for f in check_all(open_store(), [load_plant(p) for p in (plants or list_plants())])]
    if findings:
        create_table_artifact(key="governance-policy", table=findings, description="policy findings per plant")
    return findings
