"""Tasks of training and promotion."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from andon.tasks import library_logs_to_run, transient_only


@task(name="train-version", retries=1, retry_delay_seconds=10, retry_condition_fn=transient_only)
def train_version(plant: str, dataset_ids: list[str], parent_version: int | None) -> dict[str, Any]:
    library_logs_to_run()
    from andon.config import load_plant
    from andon.lifecycle.registry import model_name
    from andon.storage import open_store
    from andon.training.run import train_plant

    cfg = load_plant(plant)
    parent = (model_name(plant, cfg.recipe.task), parent_version) if parent_version else None
    return asdict(train_plant(open_store(), cfg, dataset_ids, parent=parent))


@task(name="publish-training")
def publish_training(outcome: dict[str, Any]) -> None:
    from andon.quality import fmt_rate

    m, op = outcome["metrics"], outcome["operating_point"]
    lines = [
        f"# {outcome['model_name']} v{outcome['version']} (challenger)",
        "",
        f"- held-out test split at its operating point (defect score >= {op.get('threshold', 0):.4g}, chosen on "
        f"{op.get('chosen_on', '?')}): escape **{fmt_rate(m['escape_rate'], m['escape_rate_upper'])}**, overkill "
        f"**{fmt_rate(m['overkill_rate'], m['overkill_rate_upper'])}** on {m['defects']:.0f} defects and "
        f"{m['goods']:.0f} good parts (upper bounds at 95 %)",
        f"- accuracy {m['accuracy']:.4f}, ROC-AUC {m.get('roc_auc', float('nan')):.4f}, ECE {m.get('ece', 0):.4f}",
        f"- dataset `{outcome['manifest_id'][:12]}`, best epoch {outcome['best_epoch']} of {outcome['epochs_run']}",
        f"- {outcome['images_per_s']:.0f} training images/s, {outcome['seconds']:.0f} s in all",
    ]
    plant = outcome["model_name"].split(".")[0]
    create_markdown_artifact(key=f"{plant}-training", markdown="\n".join(lines))
    create_table_artifact(key=f"{plant}-training-epochs", table=outcome["history"])


@task(name="train-sensor-version", retries=1, retry_delay_seconds=10, retry_condition_fn=transient_only)
def train_sensor_version(plant: str, table_key: str, spec: str, hold_out: list[str]) -> dict[str, Any]:
    library_logs_to_run()
    import tempfile
    from pathlib import Path

    from andon.config import load_plant
    from andon.storage import open_store
    from andon.training.sensor import store_table, train_sensor

    cfg, store = load_plant(plant), open_store()
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / Path(table_key).name
        store.download(table_key, local)
        manifest_id, _ = store_table(store, cfg, local)
    return asdict(train_sensor(store, cfg, manifest_id, spec_name=spec, hold_out=tuple(hold_out)))


@task(name="promote-challenger", retries=1, retry_delay_seconds=10, retry_condition_fn=transient_only)
def promote_challenger(plant: str, force: bool, reason: str) -> dict[str, Any]:
    library_logs_to_run()
    from andon.config import load_plant
    from andon.lifecycle.promotion import promote
    from andon.storage import open_store

    return promote(open_store(), load_plant(plant), force=force, reason=reason).as_dict()


@task(name="publish-promotion")
def publish_promotion(plant: str, decision: dict[str, Any]) -> None:
    from prefect.events import emit_event

    from andon import events

    verdict = "PROMOTED" + (" (forced)" if decision["forced"] else "") if decision["passed"] else "REFUSED"
    from andon.quality import fmt_rate

    lines = [
        f"# {plant}: challenger v{decision['challenger']} {verdict}",
        "",
        f"evaluated on {decision['evaluated_on']}, each version at its own operating point",
        "",
    ]
    for who, m in (("challenger", decision["challenger_metrics"]), ("champion", decision["champion_metrics"])):
        if m:
            lines.append(
                f"- {who}: escape {fmt_rate(m['escape_rate'], m.get('escape_rate_upper'))}, overkill "
                f"{fmt_rate(m['overkill_rate'], m.get('overkill_rate_upper'))} on {m['defects']:.0f} defects; "
                f"accuracy {m['accuracy']:.4f}"
            )
    lines.append("")
    lines += [f"- {v}" for v in decision["violations"]] or ["- all promotion rules passed"]
    create_markdown_artifact(key=f"{plant}-promotion", markdown="\n".join(lines))
    if decision["passed"]:
        emit_event(**events.model_promoted(plant, decision).emit_kwargs())
