"""The central baseline and plant fine-tuning.

- **Contributions.** A plant contributes a dataset version to the center by reference: the central
  manifest (``datasets/central/<sha256>.json``) lists the plant's object keys, nothing is copied,
  and every contribution leaves a record (``central/contributions/<plant>/<manifest>.json``).
  What the center may *publish* about a plant's data is anonymized (``publish_summary``:
  ``central/manifests/<plant>/<manifest>.json`` with object hashes, label counts and image
  statistics; no keys, no pixels).
- **Central baseline.** ``central.<task>`` is trained with the standard recipe (``base.yaml``,
  no plant overrides) on the pooled contributions, and becomes the central champion when its
  held-out accuracy beats the current one's (and the recipe's floor).
- **Fine-tuning.** A plant starts from the central champion's weights, trains on its own data
  with its own overrides (``parent_version`` = ``central.<task>/<v>``), goes through its own
  promotion gate, and reports its held-out metrics back to the central MLflow experiment as a
  run tagged with the plant, so the center sees every plant's result in one place.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from andon.config import PlantConfig
from andon.errors import DataError
from andon.lifecycle.registry import CENTRAL, compatible_central
from andon.storage import ObjectStore, join_key

if TYPE_CHECKING:
    from andon.config import Recipe
    from andon.training.run import TrainOutcome


def central_config() -> PlantConfig:
    """The center as a pseudo-plant: the standard recipe of ``base.yaml`` with no overrides."""
    from andon.config import configs_dir, load_all_plants, read_yaml

    base = read_yaml(configs_dir() / "base.yaml")
    plants = load_all_plants()
    skus = {s.code: s.model_dump() for p in plants.values() for s in p.skus}
    raw = base | {
        "id": CENTRAL,
        "name": "Central baseline (pooled plants)",
        "lines": [{"id": "pooled"}],
        "skus": list(skus.values()) or [{"code": "any"}],
    }
    return PlantConfig.model_validate(raw)


def _image_stats(store: ObjectStore, objects: list[dict[str, Any]], sample: int = 200) -> dict[str, float]:
    import numpy as np

    from andon.validation.images import image_stats_from_bytes

    rows = [image_stats_from_bytes(o["key"], store.get(o["key"])) for o in objects[:sample]]
    ok = [r for r in rows if not r.get("error")]
    if not ok:
        return {}
    return {
        f"{k}_{stat}": round(float(fn([r[k] for r in ok])), 3)
        for k in ("brightness", "contrast", "sharpness")
        for stat, fn in (("mean", np.mean), ("sd", np.std))
    } | {"width": float(ok[0]["width"]), "height": float(ok[0]["height"]), "sampled": float(len(ok))}


def publish_summary(store: ObjectStore, cfg: PlantConfig, manifest_id: str) -> dict[str, Any]:
    """The anonymized summary of a plant's dataset version that the center may keep and show."""
    from andon.data.datasets import load_manifest

    m = load_manifest(store, cfg.id, manifest_id)
    summary = {
        "plant": cfg.id,
        "manifest": manifest_id,
        "objects": len(m.objects),
        "label_counts": m.counts(),
        "object_sha256": sorted(o["sha256"] for o in m.objects),
        "image_statistics": _image_stats(store, m.objects),
        "published_at": datetime.now(UTC).isoformat(),
    }
    store.put(join_key("central", "manifests", cfg.id, f"{manifest_id}.json"), json.dumps(summary, indent=1).encode())
    return summary


def pool(store: ObjectStore, contributions: dict[str, list[str]]) -> str:
    """One central dataset version referencing the plants' dataset versions; returns its id."""
    from andon.data.datasets import build_manifest, load_manifest, require_usable, save_manifest

    if not contributions:
        raise DataError("pooling needs at least one plant's dataset")
    objects: dict[str, dict[str, Any]] = {}
    sources: list[str] = []
    for plant, ids in sorted(contributions.items()):
        for mid in ids:
            m = require_usable(store, load_manifest(store, plant, mid))
            for o in m.objects:
                objects[o["key"]] = {**o, "plant": plant}
            sources += [f"{plant}:{mid}"]
            record = {"plant": plant, "manifest": mid, "objects": len(m.objects), "at": datetime.now(UTC).isoformat()}
            store.put(join_key("central", "contributions", plant, f"{mid}.json"), json.dumps(record).encode())
    manifest = build_manifest(CENTRAL, list(objects.values()), sources)
    save_manifest(store, manifest)
    return manifest.id


@dataclass
class CentralOutcome:
    model: str
    version: int
    champion: bool
    escape_rate: float
    overkill_rate: float
    accuracy: float
    previous: int | None
    previous_escape_rate: float | None
    dataset: str
    violations: list[str]

    def summary(self) -> str:
        from andon.quality import fmt_rate

        head = f"{self.model} v{self.version}: held-out escape {fmt_rate(self.escape_rate)}, overkill "
        head += f"{fmt_rate(self.overkill_rate)} (accuracy {self.accuracy:.3f})"
        if self.champion:
            return f"{head}, the central champion"
        return f"{head}, not promoted: " + "; ".join(self.violations)


def train_central(store: ObjectStore, manifest_id: str, *, recipe: Recipe | None = None) -> CentralOutcome:
    """Train ``central.<task>`` on a pooled dataset version; champion when it meets the standard
    quality targets (``base.yaml``'s ``quality``) and does not do worse than the current one."""
    from andon.lifecycle.promotion import check_rules
    from andon.lifecycle.registry import CHAMPION, alias_version, move_champion, record_move, version_info
    from andon.training.run import train_plant

    cfg = central_config()
    out = train_plant(store, cfg, [manifest_id], recipe=recipe)
    assert out.version is not None
    current = alias_version(out.model_name, CHAMPION)
    current_metrics = None
    if current is not None:
        m = version_info(out.model_name, current).metrics
        current_metrics = {k.removeprefix("test_"): v for k, v in m.items() if k.startswith("test_")}
    violations = check_rules(out.metrics, current_metrics, cfg)
    if not violations:
        move_champion(out.model_name, out.version, expect=current)
        record_move(out.model_name, out.version, "promotion", "central baseline: all quality rules passed")
    else:
        record_move(out.model_name, out.version, "promotion_refused", "; ".join(violations))
    return CentralOutcome(
        out.model_name, out.version, not violations, out.metrics["escape_rate"], out.metrics["overkill_rate"],
        out.metrics["accuracy"], current, (current_metrics or {}).get("escape_rate"), manifest_id, violations,
    )  # fmt: skip


def fine_tune(
    store: ObjectStore, cfg: PlantConfig, manifest_ids: list[str], *, recipe: Recipe | None = None
) -> TrainOutcome:
    """A plant challenger fine-tuned from the central champion on the plant's data and recipe. When
    the center has no champion (no baseline passed the fleet's quality rules: a blind baseline is
    no starting point), the plant trains from scratch, and its version says so
    (``central.parent: none``)."""
    from andon.lifecycle.registry import CHAMPION, alias_version, model_name
    from andon.training.run import train_plant

    recipe = recipe or cfg.recipe
    if alias_version(model_name(CENTRAL, recipe.task), CHAMPION) is None:
        tags = {"central.parent": "none (the center has no champion: trained from scratch)"}
        return train_plant(store, cfg, manifest_ids, recipe=recipe, extra_tags=tags)
    parent = compatible_central(recipe, f"{cfg.id}'s recipe")
    tags = {"central.parent": f"{parent[0]}/{parent[1]}"}
    return train_plant(store, cfg, manifest_ids, recipe=recipe, parent=parent, extra_tags=tags)


def report_back(cfg: PlantConfig, outcome: TrainOutcome, promoted: bool | None = None) -> str:
    """Log the plant's held-out metrics as a run of the central experiment (tagged with the plant)."""
    import mlflow

    from andon.lifecycle.registry import ensure_experiment, model_name, use_tracking_server

    use_tracking_server()
    name = model_name(CENTRAL, cfg.recipe.task)
    mlflow.set_experiment(experiment_id=ensure_experiment(name))
    with mlflow.start_run(run_name=f"report-{cfg.id}-v{outcome.version}") as run:
        mlflow.set_tags({
            "plant": cfg.id, "plant.model": outcome.model_name, "plant.version": str(outcome.version),
            "andon.kind": "plant-report", "promoted": str(promoted).lower(),
        })  # fmt: skip
        mlflow.log_metrics({f"test_{k}": float(v) for k, v in outcome.metrics.items()})
    return str(run.info.run_id)


def plant_reports(task: str) -> list[dict[str, Any]]:
    """The plants' reports in the central experiment, newest first."""
    import mlflow

    from andon.lifecycle.registry import ensure_experiment, model_name, use_tracking_server

    use_tracking_server()
    exp = ensure_experiment(model_name(CENTRAL, task))
    runs = mlflow.search_runs([exp], filter_string="tags.`andon.kind` = 'plant-report'", output_format="list")
    return [{"plant": r.data.tags.get("plant"), "version": r.data.tags.get("plant.version"),
             "metrics": dict(r.data.metrics), "run_id": r.info.run_id} for r in runs]  # fmt: skip


def as_dict(outcome: CentralOutcome) -> dict[str, Any]:
    return asdict(outcome)
