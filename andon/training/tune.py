"""``andon tune``: a path to a good model at a new plant, within a time budget.

A small, sensible grid around the plant's recipe: the model kind (classifier; classifier and
anomaly model together; an anomaly model alone, over an untrained backbone's whole-part features
and, when the center has a champion, over its features),
the network's width, the input size, the number of epochs and the sampling of rare defects. The
plant's own recipe goes first (the baseline every candidate is compared with); each candidate is
trained by ``train_plant`` as a child run of one MLflow ``tune`` run, on the same data and the same
held-out split, and judged like any version: escape and overkill at its own operating point. A
candidate whose estimated cost (from the first one's measured seconds, scaled by images x epochs
x pixels) does not fit the remaining budget is skipped and said so.

The result is the escape/overkill frontier (the candidates no other beats on both), a table and a
picture, both logged to the parent run; the best candidate (meeting the plant's targets with the
least overkill, else the lowest escape) can be registered as the challenger, to face the gate.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from andon.errors import DataError

if TYPE_CHECKING:
    from andon.config import PlantConfig, Recipe
    from andon.storage import ObjectStore
    from andon.training.run import TrainOutcome


@dataclass
class Candidate:
    name: str
    overrides: dict[str, Any]
    status: str = "pending"  # trained | skipped | failed
    note: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    run_id: str = ""
    frontier: bool = False
    outcome: TrainOutcome | None = None

    def row(self) -> dict[str, Any]:
        m = self.metrics
        return {
            "candidate": self.name,
            "status": self.status,
            "escape_rate": m.get("escape_rate"),
            "escape_upper": m.get("escape_rate_upper"),
            "overkill_rate": m.get("overkill_rate"),
            "roc_auc": m.get("roc_auc"),
            "defects": m.get("defects"),
            "seconds": round(self.seconds, 1),
            "frontier": self.frontier,
            "note": self.note,
            "run_id": self.run_id,
        }


def grid(recipe: Recipe, has_central: bool) -> list[Candidate]:
    """The candidates, cheapest and most likely first; the recipe as it is comes first."""
    size, epochs, width = recipe.image.size, recipe.training.epochs, recipe.model.width
    bigger = min(1024, round(size * 1.5 / 16) * 16)
    other = "weighted_loss" if recipe.training.sampling == "balanced" else "balanced"
    out = [
        Candidate("the recipe", {}),
        Candidate(f"{2 * epochs} epochs", {"training": {"epochs": 2 * epochs}}),
        Candidate(f"sampling {other}", {"training": {"sampling": other}}),
        Candidate(f"width {2 * width}", {"model": {"width": min(256, 2 * width)}}),
        Candidate("classifier + anomaly model", {"kind": "both"}),
        Candidate(f"{bigger} px", {"image": {"size": bigger}}),
        Candidate(f"{bigger} px, {2 * epochs} epochs", {"image": {"size": bigger}, "training": {"epochs": 2 * epochs}}),
    ]
    if recipe.model.name in ("small_cnn", "resnet18"):
        # fitted on good parts only; an untrained backbone's whole-part features (stride 32) found
        # casting defects at ROC-AUC 0.98 (benchmarks/defects.py)
        deep = {"kind": "anomaly", "anomaly": {"backbone": "random", "strides": [32]}}
        out.append(Candidate("anomaly model, whole-part features", deep))
        if has_central:
            out.append(Candidate("anomaly model on the central backbone", {"kind": "anomaly"}))
    if recipe.kind != "classifier":
        out = [c for c in out if "kind" not in c.overrides]
    return out


def cost(recipe: Recipe) -> float:
    """Relative training cost: epochs x pixels x width (images are the same for every candidate)."""
    base = recipe.training.epochs if recipe.kind != "anomaly" else 1
    return base * recipe.image.size**2 * recipe.model.width


def frontier(cands: list[Candidate]) -> list[Candidate]:
    """The trained candidates no other beats on both escape and overkill."""
    done = [c for c in cands if c.status == "trained"]
    keep = []
    for c in done:
        e, o = c.metrics["escape_rate"], c.metrics["overkill_rate"]
        beaten = any(
            d is not c
            and d.metrics["escape_rate"] <= e
            and d.metrics["overkill_rate"] <= o
            and (d.metrics["escape_rate"], d.metrics["overkill_rate"]) != (e, o)
            for d in done
        )
        if not beaten:
            keep.append(c)
    return keep


def best(cands: list[Candidate], cfg: PlantConfig) -> Candidate | None:
    """Meeting the plant's targets with the least overkill; else the lowest escape, then overkill."""
    done = [c for c in cands if c.status == "trained"]
    q = cfg.quality
    meeting = [
        c
        for c in done
        if c.metrics["escape_rate"] <= q.max_escape_rate and c.metrics["overkill_rate"] <= q.max_overkill_rate
    ]
    pool = meeting or done
    key = (
        (lambda c: (c.metrics["overkill_rate"], c.metrics["escape_rate"]))
        if meeting
        else (lambda c: (c.metrics["escape_rate"], c.metrics["overkill_rate"]))
    )
    return min(pool, key=key) if pool else None


def tune(
    store: ObjectStore,
    cfg: PlantConfig,
    manifest_ids: list[str],
    budget_s: float,
    *,
    register: bool = False,
    on_candidate: Callable[[Candidate, int, int], None] | None = None,
    out_dir: Path | None = None,
) -> tuple[list[Candidate], Candidate | None, str]:
    """Train the grid within ``budget_s`` seconds; returns (candidates, best, parent run id)."""
    import json
    import tempfile

    import mlflow

    from andon.lifecycle.registry import CENTRAL, CHAMPION, alias_version, ensure_experiment, model_name
    from andon.training.run import register_run, train_plant

    if budget_s <= 0:
        raise DataError("the tuning budget must be positive (e.g. --budget 20m)")
    name = model_name(cfg.id, cfg.recipe.task)
    has_central = alias_version(model_name(CENTRAL, cfg.recipe.task), CHAMPION) is not None
    cands = grid(cfg.recipe, has_central)
    t_start = time.perf_counter()
    per_cost: float | None = None  # seconds per unit of cost, measured on the first candidate
    mlflow.set_experiment(experiment_id=ensure_experiment(name))
    with mlflow.start_run(run_name=f"{cfg.id}-tune") as parent:
        mlflow.set_tags({"andon.kind": "tune", "plant": cfg.id, "tune.budget_s": str(budget_s)})
        for i, cand in enumerate(cands):
            recipe = cfg.recipe.with_overrides(cand.overrides)
            left = budget_s - (time.perf_counter() - t_start)
            estimate = per_cost * cost(recipe) if per_cost else None
            if i > 0 and (left <= 0 or (estimate is not None and estimate > left)):
                cand.status = "skipped"
                cand.note = f"needs ~{estimate or 0:.0f} s, {max(left, 0):.0f} s of the budget left"
            else:
                t0 = time.perf_counter()
                try:
                    out = train_plant(
                        store, cfg, manifest_ids, recipe=recipe, register=False,
                        extra_tags={"andon.kind": "tune-candidate", "tune.candidate": cand.name},
                    )  # fmt: skip
                except Exception as exc:  # one bad candidate (e.g. no central backbone) must not end the search
                    cand.status, cand.note = "failed", f"{type(exc).__name__}: {exc}"[:300]
                else:
                    cand.status, cand.metrics, cand.run_id, cand.outcome = "trained", out.metrics, out.run_id, out
                cand.seconds = time.perf_counter() - t0
                if cand.status == "trained" and per_cost is None:
                    per_cost = cand.seconds / cost(recipe)
            if on_candidate:
                on_candidate(cand, i + 1, len(cands))
        for c in frontier(cands):
            c.frontier = True
        chosen = best(cands, cfg)
        rows = [c.row() for c in cands]
        tmp = Path(tempfile.mkdtemp(prefix="andon-tune-")) if out_dir is None else out_dir
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / "candidates.json").write_text(json.dumps(rows, indent=1))
        frontier_png(cands, cfg, tmp / "frontier.png", chosen)
        mlflow.log_artifacts(str(tmp), artifact_path="tune")
        if chosen is not None:
            mlflow.set_tags({"tune.best": chosen.name, "tune.best_run": chosen.run_id})
        if register and chosen is not None and chosen.outcome is not None:
            version = register_run(chosen.outcome)
            chosen.note = (chosen.note + f"; registered as {name} v{version} (challenger)").strip("; ")
            mlflow.set_tag("tune.registered_version", str(version))
    return cands, chosen, parent.info.run_id


def frontier_png(cands: list[Candidate], cfg: PlantConfig, path: Path, chosen: Candidate | None) -> Path:
    """Every trained candidate's escape against overkill; the frontier joined; the targets shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.4))
    done = [c for c in cands if c.status == "trained"]
    q = cfg.quality
    ax.add_patch(matplotlib.patches.Rectangle((0, 0), q.max_overkill_rate * 100, q.max_escape_rate * 100,
                                              color="tab:green", alpha=0.2, label="the plant's targets"))  # fmt: skip
    for c in done:
        x, y = c.metrics["overkill_rate"] * 100, c.metrics["escape_rate"] * 100
        ax.plot([x], [y], "o", color="tab:red" if c is chosen else "tab:blue")
        ax.annotate(c.name, (x, y), fontsize=7, xytext=(4, 3), textcoords="offset points")
    front = sorted((c.metrics["overkill_rate"] * 100, c.metrics["escape_rate"] * 100) for c in done if c.frontier)
    if front:
        ax.plot([p[0] for p in front], [p[1] for p in front], "--", color="grey", lw=1, label="frontier")
    ax.set_xlabel("overkill: good parts rejected (%)")
    ax.set_ylabel("escape: defects passed (%)")
    ax.set_xscale("symlog", linthresh=1)
    ax.set_yscale("symlog", linthresh=1)
    ax.set_title(f"{cfg.id}: candidates at their own operating points", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
