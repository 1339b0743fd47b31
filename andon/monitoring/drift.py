"""The Evidently data-drift report of a window against the champion's reference, sampled (the
report costs seconds per 10,000 rows) and kept at ``reports/<plant>/drift/<time>.html``, plus a
PNG of the charts' recent z-scores for people who would rather look than read."""

from __future__ import annotations

import tempfile
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from andon.config import PlantConfig
from andon.monitoring.reference import DRIFT_FEATURES, EMBEDDING_FEATURES
from andon.storage import ObjectStore, join_key

if TYPE_CHECKING:
    import pandas as pd


def drift_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """Prediction-log rows -> one column per drift feature (embedding list unpacked)."""
    import numpy as np
    import pandas as pd

    out = pd.DataFrame({c: rows[c].astype("float64") for c in ("brightness", "contrast", "sharpness") if c in rows})
    if len(rows) and "embedding" in rows:
        emb = np.stack(rows["embedding"].to_numpy())
        for i, col in enumerate(EMBEDDING_FEATURES[: emb.shape[1]]):
            out[col] = emb[:, i].astype("float64")
    return out


def drift_report(
    store: ObjectStore,
    cfg: PlantConfig,
    reference: pd.DataFrame,
    rows: pd.DataFrame,
    when: datetime,
    columns: list[str] | None = None,
) -> tuple[str | None, float, dict[str, float]]:
    """(report key, share of drifted columns, drift score per column); no report without rows.
    ``rows``: vision prediction-log rows (unpacked by ``drift_frame``) or a frame that already
    has one column per feature (the sensor model's readings); ``columns``: the features compared
    (default: the vision drift features)."""
    from evidently import Report
    from evidently.presets import DataDriftPreset

    current = drift_frame(rows) if "embedding" in rows or "brightness" in rows else rows
    if current.empty:
        return None, 0.0, {}
    cols = [c for c in (columns or DRIFT_FEATURES) if c in current.columns and c in reference.columns]
    if not cols:
        return None, 0.0, {}
    n = cfg.monitoring.drift_sample
    cur = current[cols].sample(min(n, len(current)), random_state=0)
    ref = reference[cols].sample(min(n, len(reference)), random_state=0)
    snapshot = Report([DataDriftPreset()]).run(cur, ref)
    share, scores = _summary(snapshot.dict())
    add_to_workspace(cfg.id, snapshot, when)
    key = join_key("reports", cfg.id, "drift", f"{when:%Y%m%dT%H%M%S}.html")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "drift.html"
        snapshot.save_html(str(path))
        store.put(key, path.read_bytes(), "text/html")
    return key, share, scores


def add_to_workspace(plant: str, snapshot: Any, when: datetime) -> str | None:
    """Add the report to the plant's project in the Evidently workspace (``ANDON_EVIDENTLY_WORKSPACE``:
    a folder, or an ``evidently ui`` URL), so ``evidently ui`` shows drift over time. A workspace
    that fails is a warning, never a lost alert: the HTML report is kept in the store either way."""
    import logging

    from andon.settings import get_settings

    s = get_settings()
    if not s.evidently_snapshots:
        return None
    try:
        ws = open_workspace(s.evidently_workspace)
        name = f"andon {plant}"
        found = ws.search_project(name)
        project = found[0] if found else ws.create_project(name, description=f"Andon drift reports of {plant}")
        ref = ws.add_run(project.id, snapshot, include_data=False, name=f"{plant} {when:%Y-%m-%d %H:%M}")
        return str(getattr(ref, "id", ""))
    except Exception as exc:  # the workspace is a view; the report and the alert must not depend on it
        logging.getLogger("andon").warning("evidently workspace %s: %s", s.evidently_workspace, exc)
        return None


def open_workspace(location: str) -> Any:
    """A local Evidently workspace (a folder) or a remote one (an ``evidently ui`` URL)."""
    if location.startswith(("http://", "https://")):
        from evidently.ui.workspace import RemoteWorkspace

        return RemoteWorkspace(location)
    from evidently.ui.workspace import Workspace

    return Workspace(location)


def _summary(doc: dict[str, Any]) -> tuple[float, dict[str, float]]:
    share = 0.0
    scores: dict[str, float] = {}
    for metric in doc.get("metrics", []):
        name = str(metric.get("metric_id") or metric.get("metric_name") or "")
        value = metric.get("value")
        if name.startswith("DriftedColumnsCount") and isinstance(value, dict):
            share = float(value.get("share", 0.0))
        elif name.startswith("ValueDrift(column="):
            col = name.split("column=", 1)[1].split(",")[0].rstrip(")")
            if isinstance(value, int | float):
                scores[col] = float(value)
    return share, scores


def charts_png(
    history: dict[str, list[float]], bounds: dict[str, tuple[float | None, float | None]], title: str
) -> bytes:
    """Small multiples of the recent window z-scores per series, with each series' Shewhart
    limits (``(lower, upper)``, None where the series has no limit on that side)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [k for k, v in history.items() if v][:16]
    cols = 4
    rows = max(1, -(-len(names) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(12, 2.2 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        z = history[name]
        ax.plot(z, lw=1)
        for limit in bounds.get(name, (None, None)):
            if limit is not None:
                ax.axhline(limit, color="red", lw=0.8, ls="--")
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()
