"""Scoring process readings with the sensor champion (``<plant>.machine-failure``): one
prediction-log row per reading, and for every predicted failure the SHAP value of each feature
(per predicted failure type) stored as JSON at ``explanations/<plant>/<date>/<part-id>.json``,
with the three features that pushed hardest logged in the row itself.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from andon.config import PlantConfig
from andon.errors import DataError
from andon.lifecycle.registry import CHAMPION, SENSOR_TASK
from andon.scoring.batch import load_cached, resolve_champion
from andon.scoring.predlog import PredictionLog
from andon.storage import ObjectStore

if TYPE_CHECKING:
    import pandas as pd

TASK = SENSOR_TASK
OK = "ok"


@dataclass
class SensorScoreSummary:
    plant: str
    model: str
    version: int
    rows: int
    scored: int
    errors: int
    failures: int
    explained: int
    seconds: float
    log_keys: list[str]


def feature_names(prep: dict[str, Any]) -> list[str]:
    names = list(prep["features"])
    for col, values in prep.get("one_hot", {}).items():
        names += [f"{col}={v}" for v in values]
    return names


def _matrix(frame: pd.DataFrame, prep: dict[str, Any]) -> tuple[Any, Any]:
    """(standardized features, raw features) with NaN rows kept (flagged by the caller)."""
    import numpy as np
    import pandas as pd

    missing = [c for c in [*prep["features"], *prep.get("one_hot", {})] if c not in frame.columns]
    if missing:
        raise DataError(f"the readings lack columns {missing} that the sensor model needs")
    raw = np.stack([pd.to_numeric(frame[c], errors="coerce").to_numpy("float64") for c in prep["features"]], axis=1)
    cols = [raw]
    for col, values in prep.get("one_hot", {}).items():
        cols.append(np.stack([(frame[col] == v).to_numpy("float64") for v in values], axis=1))
    x = np.concatenate(cols, axis=1).astype("float32")
    return (x - np.asarray(prep["mean"], "float32")) / np.asarray(prep["std"], "float32"), x


def score_sensor_table(
    store: ObjectStore, cfg: PlantConfig, frame: pd.DataFrame, *, explain: bool = True
) -> SensorScoreSummary:
    """One log row per reading; a failure type is predicted when its probability reaches the
    threshold chosen on the validation split at training time (0.5 for older versions)."""
    import numpy as np
    import pandas as pd
    import torch

    from andon.explain.maps import explanation_key, sensor_shap

    t0 = time.perf_counter()
    if frame.empty:
        raise DataError("no readings to score")
    name, version = resolve_champion(cfg, TASK)
    loaded = load_cached(name, version)
    model, arch, prep = loaded.model, loaded.arch, loaded.prep
    targets = list(arch["classes"])
    thresholds = prep.get("thresholds") or [0.5] * len(targets)
    names = feature_names(prep)
    xs, raw = _matrix(frame, prep)
    bad = ~np.isfinite(xs).all(axis=1)
    with torch.inference_mode():
        probs = torch.sigmoid(model(torch.from_numpy(np.nan_to_num(xs)))).numpy()
    now = datetime.now(UTC)
    ids = frame["Product ID"] if "Product ID" in frame.columns else frame.get("UDI", pd.Series(range(len(frame))))
    lines = frame["line"] if "line" in frame.columns else pd.Series([cfg.line_ids[0]] * len(frame))
    rows: list[dict[str, Any]] = []
    flagged: list[int] = []
    for i in range(len(frame)):
        row: dict[str, Any] = {
            "part_id": str(ids.iloc[i]),
            "line": str(lines.iloc[i]),
            "scored_at": now,
            "model_name": name,
            "model_version": version,
            "model_alias": CHAMPION,
        }
        if bad[i]:
            cols = [n for n, v in zip(names, xs[i], strict=True) if not np.isfinite(v)]
            row.update(error=f"missing or non-numeric readings: {', '.join(cols)}", predicted_class="error")
            row["probabilities"] = []
        else:
            failed = [t for t, p, cut in zip(targets, probs[i], thresholds, strict=True) if p >= cut]
            row.update(predicted_class="+".join(failed) or OK, probabilities=probs[i].tolist())
            row["inputs"] = raw[i, : len(prep["features"])].tolist()  # the readings, for drift monitoring
            if failed:
                flagged.append(i)
        rows.append(row)
    if explain and flagged:
        values = sensor_shap(model, xs[flagged])  # (n, features, targets)
        for j, i in enumerate(flagged):
            row = rows[i]
            failed = row["predicted_class"].split("+")
            per_type = {t: values[j, :, targets.index(t)].round(5).tolist() for t in failed}
            worst = max(failed, key=lambda t: probs[i][targets.index(t)])
            contrib = values[j, :, targets.index(worst)]
            order = np.argsort(-np.abs(contrib))[:3]
            row["explanation_top"] = json.dumps(
                [
                    {
                        "failure": worst,
                        "feature": names[k],
                        "shap": round(float(contrib[k]), 4),
                        "value": float(raw[i, k]),
                    }
                    for k in order
                ]
            )
            key = explanation_key(cfg.id, now, str(row["part_id"]), "json", model=name, version=version)
            doc = {
                "part_id": row["part_id"],
                "model": f"{name} v{version}",
                "method": "shap.DeepExplainer (logit units, baseline = training mean)",
                "features": names,
                "values": dict(zip(names, raw[i].tolist(), strict=True)),
                "shap": per_type,
            }
            store.put(key, json.dumps(doc, indent=1).encode(), "application/json")
            row.update(explanation_key=key, explanation_method="deep-shap")
    keys = PredictionLog(store, cfg.id).append(rows)
    errors = int(bad.sum())
    return SensorScoreSummary(
        cfg.id,
        name,
        version,
        len(rows),
        len(rows) - errors,
        errors,
        len(flagged),
        len(flagged) if explain else 0,
        time.perf_counter() - t0,
        keys,
    )
