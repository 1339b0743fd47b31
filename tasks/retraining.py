"""Tasks of the retrain flow."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact

from andon.tasks import library_logs_to_run, transient_only


@task(name="retrain-policy")
def retrain_policy(
    plant: str, task_name: str, trigger: str, event_id: str | None, details: dict[str, Any]
) -> dict[str, Any]:
    """Decide, record the decision in the store and as tags on the champion version."""
    library_logs_to_run()
    from andon.config import load_plant
    from andon.lifecycle.registry import tag_version
    from andon.lifecycle.retraining import champion_created, decide
    from andon.storage import open_store

    cfg = load_plant(plant)
    decision = decide(open_store(), cfg, task_name, trigger, event_id, details)
    champ = champion_created(cfg, task_name)
    if champ:
        tags = {"retrain.last_decision": decision.summary[:500], "retrain.last_trigger": trigger}
        tag_version(champ[0], champ[1], tags | {"retrain.last_event_id": event_id or ""})
    return decision.as_dict()


@task(name="publish-policy")
def publish_policy(decision: dict[str, Any]) -> None:
    verdict = "RETRAIN" if decision["go"] else "SKIPPED"
    lines = [
        f"# {decision['plant']} {decision['task']}: {verdict}",
        "",
        f"- trigger `{decision['trigger']}`, event `{decision['event_id'] or '-'}`, decided {decision['decided_at']}",
    ]
    if decision["new_labels"] is not None:
        lines.append(f"- new labels since the champion: {decision['new_labels']}")
    lines += [f"- why not: {r}" for r in decision["reasons"]]
    create_markdown_artifact(key=f"{decision['plant']}-retrain-decision", markdown="\n".join(lines))


@task(name="collect-training-data", retries=1, retry_delay_seconds=10, retry_condition_fn=transient_only)
def collect_training_data(plant: str) -> dict[str, Any]:
    from andon.config import load_plant
    from andon.lifecycle.retraining import collect_dataset
    from andon.storage import open_store

    return asdict(collect_dataset(open_store(), load_plant(plant)))


@task(name="fine-tune", retries=1, retry_delay_seconds=10, retry_condition_fn=transient_only)
def fine_tune(plant: str, dataset_id: str, trigger: str, event_id: str | None) -> dict[str, Any]:
    """A challenger fine-tuned from the champion's weights on the collected dataset."""
    library_logs_to_run()
    from andon.config import load_plant
    from andon.lifecycle.retraining import champion_created
    from andon.storage import open_store
    from andon.training.run import train_plant

    cfg = load_plant(plant)
    champ = champion_created(cfg)
    recipe = cfg.recipe
    if cfg.retrain.fine_tune_epochs:
        training = recipe.training.model_copy(update={"epochs": cfg.retrain.fine_tune_epochs})
        recipe = recipe.model_copy(update={"training": training})
    tags = {"retrain.trigger": trigger, "retrain.event_id": event_id or ""}
    outcome = train_plant(
        open_store(), cfg, [dataset_id], recipe=recipe, parent=champ[:2] if champ else None, extra_tags=tags
    )
    return asdict(outcome)


@task(name="record-labels-used")
def record_labels_used(plant: str, part_ids: list[str], model: str, version: int) -> None:
    from andon.labeling.queue import LabelQueue
    from andon.storage import open_store

    if part_ids:
        LabelQueue(open_store(), plant).mark_used(part_ids, model, version)


@task(name="retrain-sensor", retries=1, retry_delay_seconds=10, retry_condition_fn=transient_only)
def retrain_sensor_model(plant: str, failure_type: str) -> dict[str, Any]:
    library_logs_to_run()
    from andon.config import load_plant
    from andon.lifecycle.retraining import retrain_sensor
    from andon.storage import open_store

    return asdict(retrain_sensor(open_store(), load_plant(plant), failure_type))


@task(name="announce-retrain")
def announce_retrain(plant: str, decision: dict[str, Any], result: dict[str, Any]) -> None:
    from prefect.events import emit_event

    from andon import events

    payload = {
        "plant": plant,
        "task": decision["task"],
        "trigger": decision["trigger"],
        "event_id": decision["event_id"],
        "retrained": decision["go"],
        "reasons": decision["reasons"],
        **result,
    }
    emit_event(**events.retrain_finished(plant, decision, payload).emit_kwargs())
    if decision["go"]:  # the run got here: its event is handled (a failed run leaves it open for a retry)
        from andon.lifecycle.retraining import finish_event
        from andon.storage import open_store

        summary = f"retrained: v{result.get('version')}, promoted {result.get('promoted')}"
        finish_event(open_store(), plant, decision["event_id"], summary)
