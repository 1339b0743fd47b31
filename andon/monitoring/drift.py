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
    store: ObjectStore, cfg: PlantConfig, reference: pd.DataFrame, rows: pd.DataFrame, when: datetime
) -> tuple[str | None, float, dict[str, float]]:
    """(report key, share of drifted columns, drift score per column); no report without rows."""
    from evidently import Report
    from evidently.presets import DataDriftPreset

    current = drift_frame(rows)
    if current.empty:
        return None, 0.0, {}
    cols = [c for c in DRIFT_FEATURES if c in current.columns and c in reference.columns]
    n = cfg.monitoring.drift_sample
    cur = current[cols].sample(min(n, len(current)), random_state=0)
    ref = reference[cols].sample(min(n, len(reference)), random_state=0)
    snapshot = Report([DataDriftPreset()]).run(cur, ref)
    share, scores = _summary(snapshot.dict())
    key = join_key("reports", cfg.id, "drift", f"{when:%Y%m%dT%H%M%S}.html")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "drift.html"
        snapshot.save_html(str(path))
        store.put(key, path.read_bytes(), "text/html")
    return key, share, scores


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


def charts_png(history: dict[str, list[float]], limit: float, title: str) -> bytes:
    """Small multiples of the recent window z-scores per series, with the Shewhart limit."""
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
        ax.axhline(limit, color="red", lw=0.8, ls="--")
        ax.axhline(-limit, color="red", lw=0.8, ls="--")
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
