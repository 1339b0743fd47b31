"""The cross-plant report (``andon governance report``, flow ``governance-report``) and recipe
trials (``andon governance trial``).

Per plant: the champion's version, lineage (dataset, parent, commit), age, metrics on its own
golden set (``datasets/<plant>/golden.json``, else the champion's held-out split), drift status
(active monitoring conditions) and open alerts, escape and overkill first. The **generalization
matrix**: every plant's champion scored on every other plant's golden set at the champion's own
operating point (escape and overkill per cell, two heatmaps). **Settings**: each recipe value a
plant sets differently from the standard recipe, next to how well that plant's champion does on
the other plants (its off-diagonal mean escape and overkill): a setting held by the plants whose
models travel is a candidate for the standard; one held only by plants whose models do not is a
local quirk. HTML with charts at ``reports/central/governance/<time>.html``.
"""

from __future__ import annotations

import base64
import html
import io
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from andon.config import PlantConfig
from andon.errors import ObjectNotFoundError
from andon.storage import ObjectStore, join_key


@dataclass
class PlantStatus:
    plant: str
    model: str
    version: int | None = None
    age_days: float | None = None
    dataset: str = ""
    parent: str = ""
    commit: str = ""
    evaluated_on: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    drift: list[str] = field(default_factory=list)
    open_alerts: int = 0
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class GovernanceReport:
    at: str
    plants: list[PlantStatus]
    matrix: dict[str, dict[str, dict[str, float]]]  # champion's plant -> golden set's plant -> escape, overkill
    settings: list[dict[str, Any]]
    key: str = ""
    seconds: float = 0.0

    def table(self) -> list[dict[str, Any]]:
        return [
            {
                "plant": p.plant,
                "version": p.version,
                "age_days": p.age_days,
                "escape_rate": p.metrics.get("escape_rate"),
                "escape_upper": p.metrics.get("escape_rate_upper"),
                "overkill_rate": p.metrics.get("overkill_rate"),
                "defects": p.metrics.get("defects"),
                "accuracy": p.metrics.get("accuracy"),
                "drift": ", ".join(p.drift) or "-",
                "open_alerts": p.open_alerts,
                "escape_elsewhere": _offdiag(self.matrix, p.plant, "escape_rate"),
                "overkill_elsewhere": _offdiag(self.matrix, p.plant, "overkill_rate"),
            }
            for p in self.plants
        ]


def _flat(prefix: str, value: Any, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, dict):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else k, v, out)
    else:
        out[prefix] = value
    return out


def overrides(cfg: PlantConfig, standard: dict[str, Any]) -> dict[str, Any]:
    """Recipe values of ``cfg`` that differ from the standard recipe (dotted paths)."""
    mine = _flat("", cfg.recipe.model_dump(mode="json"), {})
    return {k: v for k, v in mine.items() if standard.get(k) != v}


def _offdiag(matrix: dict[str, dict[str, dict[str, float]]], plant: str, metric: str) -> float | None:
    """The mean of ``metric`` of ``plant``'s champion on the other plants' golden sets."""
    row = [c[metric] for k, c in matrix.get(plant, {}).items() if k != plant and c.get(metric) == c.get(metric)]
    return round(sum(row) / len(row), 4) if row else None


def _score(store: ObjectStore, loaded: Any, objects: list[dict[str, Any]]) -> dict[str, float]:
    from andon.lifecycle.promotion import evaluate_model

    return evaluate_model(store, loaded, objects)


def _digest(objects: list[dict[str, Any]]) -> str:
    """A golden set's identity: its images' checksums (labels travel with them)."""
    import hashlib

    text = "\n".join(sorted(f"{o['sha256']} {o.get('label', '')}" for o in objects))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _cell(
    store: ObjectStore,
    loaded: Any,
    plant: str,
    objects: list[dict[str, Any]],
    decoded: dict[Any, Any],
    runner: Any = None,
) -> dict[str, float]:
    """One cell of the generalization matrix: escape and overkill at the champion's own operating
    point (and accuracy, second; no latency), on golden images decoded once per plant and input
    size and shared by every model scored on them, run by the runtime the plant serves with."""
    from andon.settings import get_settings
    from andon.training.data import ImageCache, load_split
    from andon.training.evaluate import classification_metrics

    key = (plant, loaded.classes, loaded.size, loaded.transform)
    if key not in decoded:
        cache = ImageCache(get_settings().home / "cache" / "images")
        decoded[key] = load_split(store, objects, loaded.classes, loaded.size, cache, transform=loaded.transform)
    data = decoded[key]
    probs, _ = loaded.predict(data.images, runner)
    m = classification_metrics(probs, data.labels, loaded.classes, loaded.operating_point.threshold)
    return {k: round(float(m[k]), 4) for k in ("escape_rate", "overkill_rate", "accuracy")}


def _golden(store: ObjectStore, cfg: PlantConfig, version: int) -> tuple[str, list[dict[str, Any]]]:
    from andon.lifecycle.promotion import golden_objects

    return golden_objects(store, cfg, version)


def build_report(store: ObjectStore, plants: list[PlantConfig], *, matrix: bool = True) -> GovernanceReport:
    from andon.governance.central import central_config
    from andon.lifecycle.registry import CHAMPION, alias_version, model_name, version_info
    from andon.monitoring.monitor import list_alerts
    from andon.scoring.batch import pick_runner
    from andon.training.run import load_version

    t0 = time.perf_counter()
    now = datetime.now(UTC)
    standard = _flat("", central_config().recipe.model_dump(mode="json"), {})
    statuses: list[PlantStatus] = []
    models: dict[str, Any] = {}
    runners: dict[str, Any] = {}
    golden: dict[str, list[dict[str, Any]]] = {}
    versions: dict[str, tuple[str, int, str]] = {}
    for cfg in plants:
        name = model_name(cfg.id, cfg.recipe.task)
        st = PlantStatus(cfg.id, name, overrides=overrides(cfg, standard))
        st.open_alerts = len(list_alerts(store, cfg.id, "open"))
        try:
            state = json.loads(store.get(join_key("monitoring", cfg.id, "state.json")))
            st.drift = sorted(state.get("active", {}))
        except ObjectNotFoundError:
            pass
        version = alias_version(name, CHAMPION)
        if version is not None:
            info = version_info(name, version)
            st.version, st.commit = version, info.tags.get("code.commit", "")[:10]
            st.dataset, st.parent = info.tags.get("data.manifest_sha256", "")[:12], info.tags.get("parent_version", "")
            if info.created:
                st.age_days = round((now - datetime.fromisoformat(info.created)).total_seconds() / 86400, 2)
            st.evaluated_on, objects = _golden(store, cfg, version)
            golden[cfg.id] = objects
            versions[cfg.id] = (name, version, info.run_id)
            models[cfg.id] = load_version(name, version)
            runners[cfg.id] = pick_runner(cfg, name, version)  # the runtime the plant serves with
            st.metrics = {k: round(v, 4) for k, v in _score(store, models[cfg.id], objects).items()}
        statuses.append(st)
    grid: dict[str, dict[str, dict[str, float]]] = {}
    decoded: dict[tuple[str, tuple[str, ...], int, str], Any] = {}  # each golden set is read once, not once per model
    digests = {dst: _digest(objects) for dst, objects in golden.items()}
    for src in models:
        grid[src] = {}
        # a version's weights and a golden set's images never change: a cell is computed once, ever
        name, version, run_id = versions[src]  # the run too: a reset registry reuses version numbers
        key = join_key("governance", "matrix", name, f"v{version}-{run_id[:12]}.quality.json")
        cells = json.loads(store.get(key)) if matrix and store.exists(key) else {}
        known = len(cells)
        for dst, objects in golden.items():
            if src == dst:
                own = next(s for s in statuses if s.plant == src).metrics
                grid[src][dst] = {k: own.get(k, float("nan")) for k in ("escape_rate", "overkill_rate", "accuracy")}
            elif matrix and objects:
                if digests[dst] not in cells:
                    cells[digests[dst]] = _cell(store, models[src], dst, objects, decoded, runners[src])
                grid[src][dst] = cells[digests[dst]]
        if len(cells) > known:
            store.put(key, json.dumps(cells, sort_keys=True).encode(), "application/json")
    report = GovernanceReport(now.isoformat(), statuses, grid, [])
    report.settings = settings_table(report)
    report.seconds = time.perf_counter() - t0
    return report


def settings_table(report: GovernanceReport) -> list[dict[str, Any]]:
    """Each non-standard setting: which plants hold it, and how far their champions travel (mean
    escape and overkill on the other plants' golden sets)."""
    by_setting: dict[tuple[str, str], list[str]] = {}
    for p in report.plants:
        for k, v in p.overrides.items():
            by_setting.setdefault((k, json.dumps(v)), []).append(p.plant)

    def mean_of(plants: list[str], metric: str) -> float | None:
        vals = [g for h in plants if (g := _offdiag(report.matrix, h, metric)) is not None]
        return round(sum(vals) / len(vals), 4) if vals else None

    rows = []
    for (k, v), holders in sorted(by_setting.items()):
        others = [p.plant for p in report.plants if p.plant not in holders]
        esc, ovk = mean_of(holders, "escape_rate"), mean_of(holders, "overkill_rate")
        esc_o, ovk_o = mean_of(others, "escape_rate"), mean_of(others, "overkill_rate")
        verdict = "unknown (no cross-plant scores)"
        if None not in (esc, ovk, esc_o, ovk_o):
            better = esc <= esc_o and ovk <= ovk_o  # type: ignore[operator]
            verdict = "generalizes: candidate for the standard" if better else "local quirk"
        rows.append({"setting": k, "value": json.loads(v), "plants": holders, "cross_plant_escape": esc,
                     "cross_plant_overkill": ovk, "others_escape": esc_o, "others_overkill": ovk_o,
                     "verdict": verdict})  # fmt: skip
    return rows


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def render_html(report: GovernanceReport) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    charts = []
    plants = [p for p in report.plants if p.plant in report.matrix]
    if plants:
        names = [p.plant for p in plants]
        for metric, what in (("escape_rate", "escape rate"), ("overkill_rate", "overkill rate")):
            grid = np.array(
                [[report.matrix[a].get(b, {}).get(metric, np.nan) for b in names] for a in names], dtype=float
            )
            fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 1.0 * len(names) + 1.5))
            im = ax.imshow(grid * 100, vmin=0, vmax=20, cmap="RdYlGn_r")
            ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
            ax.set_yticks(range(len(names)), names)
            ax.set_xlabel("golden set of")
            ax.set_ylabel("champion of (at its own operating point)")
            for i in range(len(names)):
                for j in range(len(names)):
                    if not np.isnan(grid[i, j]):
                        ax.text(j, i, f"{grid[i, j] * 100:.1f}", ha="center", va="center", fontsize=8)
            fig.colorbar(im, ax=ax, label=f"{what} (%)")
            ax.set_title(f"generalization matrix: {what}")
            charts.append(_png(fig))
    table = report.table()
    plants_html = _table(list(table[0]) if table else [], [list(r.values()) for r in table])
    lineage_html = _table(
        ["plant", "champion", "dataset", "parent", "commit", "metrics on"],
        [[p.plant, f"{p.model} v{p.version}", p.dataset, p.parent or "-", p.commit, p.evaluated_on]
         for p in report.plants if p.version is not None],
    )  # fmt: skip
    settings_html = _table(
        ["setting", "value", "plants", "their escape / overkill elsewhere", "other plants'", "verdict"],
        [[r["setting"], json.dumps(r["value"]), ", ".join(r["plants"]),
          f"{r['cross_plant_escape']} / {r['cross_plant_overkill']}", f"{r['others_escape']} / {r['others_overkill']}",
          r["verdict"]] for r in report.settings],
    )  # fmt: skip
    imgs = "".join(f'<img alt="chart" src="data:image/png;base64,{c}">' for c in charts)
    title = f"{report.at[:19]} UTC, {len(report.plants)} plants, built in {report.seconds:.1f} s"
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>Andon governance {report.at[:19]}</title>'
        f"<style>{STYLE}</style></head><body><h1>Andon governance report</h1><p>{title}</p>"
        f"<h2>Plants</h2>{plants_html}<h2>Lineage</h2>{lineage_html}<h2>Generalization</h2>{imgs}"
        f"<h2>Recipe settings: standard or local?</h2>{settings_html}</body></html>"
    )


STYLE = (
    "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
    "td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}th{background:#eee}"
)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def save_report(store: ObjectStore, report: GovernanceReport) -> str:
    key = join_key("reports", "central", "governance", f"{datetime.now(UTC):%Y%m%dT%H%M%S}.html")
    store.put(key, render_html(report).encode(), "text/html")
    report.key = key
    return key


def trial(
    store: ObjectStore, plants: list[PlantConfig], overrides_: dict[str, Any], dataset_ids: dict[str, list[str]]
) -> list[dict[str, Any]]:
    """Train a candidate recipe (the plant's recipe with ``overrides_`` merged in: one plant's
    innovation) at each plant on ``dataset_ids[plant]``, unregistered, and compare it with the
    plant's champion on the plant's own golden set: where it helps, where it hurts."""
    from andon.errors import DataError
    from andon.lifecycle.registry import CHAMPION, alias_version, model_name
    from andon.training.run import load_run, load_version, train_plant

    rows = []
    for cfg in plants:
        recipe = cfg.recipe.with_overrides(overrides_)
        name = model_name(cfg.id, cfg.recipe.task)
        champion = alias_version(name, CHAMPION)
        if champion is None:
            raise DataError(f"{cfg.id} has no champion to compare a trial against")
        if not dataset_ids.get(cfg.id):
            raise DataError(f"no dataset given for {cfg.id}")
        tags = {"andon.kind": "governance-trial", "trial.overrides": json.dumps(overrides_)}
        out = train_plant(store, cfg, dataset_ids[cfg.id], recipe=recipe, register=False, extra_tags=tags)
        what, objects = _golden(store, cfg, champion)
        base = _score(store, load_version(name, champion), objects)
        cand = _score(store, load_run(out.run_id), objects)
        d_esc, d_ovk = cand["escape_rate"] - base["escape_rate"], cand["overkill_rate"] - base["overkill_rate"]
        if d_esc < -0.005 or (abs(d_esc) <= 0.005 and d_ovk < -0.005):
            verdict = "helps"
        elif d_esc > 0.005 or d_ovk > 0.005:
            verdict = "hurts"
        else:
            verdict = "no difference"
        rows.append({
            "plant": cfg.id, "evaluated_on": what, "champion": f"v{champion}",
            "champion_escape": round(base["escape_rate"], 4), "trial_escape": round(cand["escape_rate"], 4),
            "champion_overkill": round(base["overkill_rate"], 4), "trial_overkill": round(cand["overkill_rate"], 4),
            "escape_delta": round(d_esc, 4), "overkill_delta": round(d_ovk, 4),
            "champion_accuracy": round(base["accuracy"], 4), "trial_accuracy": round(cand["accuracy"], 4),
            "verdict": verdict, "run_id": out.run_id,
        })  # fmt: skip
    return rows
