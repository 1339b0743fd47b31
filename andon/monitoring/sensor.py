"""Monitoring the sensor model (``<plant>.machine-failure``): data drift of its input readings
and prediction drift of its predicted failure rate, on the same charts, false-alarm budget,
Evidently report and alerts as the vision model.

The reference is the validation split at training time (raw readings and whether a failure was
predicted), stored with the version as ``andon/reference.json`` + ``reference.parquet`` like the
vision reference. Scoring logs each reading's raw values in the log's ``inputs`` column. Sensor
readings carry no reviewed labels, so there is no reviewed accuracy here: a failure is reviewed
on the machine, not in the log.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from andon.errors import DataError
from andon.monitoring.reference import FeatureRef, Reference
from andon.monitoring.series import Series, bernoulli_sd

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from andon.config import MonitoringSpec

SENSOR_COLUMNS = "part_id, scored_at, inputs, predicted_class"
FAILURE_RATE = "failure_rate"
OK = "ok"


def sensor_reference(
    names: list[str], raw: np.ndarray, predicted: np.ndarray, truth: np.ndarray, targets: list[str]
) -> tuple[Reference, pd.DataFrame]:
    """Reference of a sensor model from its validation split: ``raw`` readings (n, features),
    ``predicted`` / ``truth`` failure flags (n, targets)."""
    import pandas as pd

    if raw.shape[1] != len(names) or len(raw) != len(predicted):
        raise ValueError(f"{raw.shape} readings do not match {len(names)} features / {len(predicted)} predictions")
    any_pred, any_true = predicted.max(1) > 0, truth.max(1) > 0
    features = {
        n: FeatureRef(float(raw[:, i].mean()), float(raw[:, i].std(ddof=1)) or 1e-6) for i, n in enumerate(names)
    }
    nan = FeatureRef(math.nan, math.nan)
    ref = Reference(
        model_name="",
        version=0,
        n=len(raw),
        classes=[OK, *targets],
        features=features,
        defect_rate=float(any_pred.mean()),
        confidence=nan,
        entropy=nan,
        accuracy=float((any_pred == any_true).mean()),
        defect_recall=float(any_pred[any_true].mean()) if any_true.any() else math.nan,
        temperature=1.0,
        estimated_accuracy=nan,
    )
    table = pd.DataFrame({n: raw[:, i].astype("float64") for i, n in enumerate(names)})
    table["predicted_failure"] = any_pred
    return ref, table


def sensor_series_names(ref: Reference) -> list[str]:
    return [*ref.features, FAILURE_RATE]


def sensor_frame(rows: pd.DataFrame, ref: Reference) -> pd.DataFrame:
    """Log rows -> one column per sensor feature (the ``inputs`` list unpacked, reference order)."""
    import numpy as np
    import pandas as pd

    names = list(ref.features)
    if rows.empty or "inputs" not in rows:
        return pd.DataFrame(columns=names, dtype="float64")
    x = np.stack(rows["inputs"].to_numpy()).astype("float64")
    if x.shape[1] != len(names):
        raise DataError(f"the log holds {x.shape[1]} sensor inputs per reading; the reference has {len(names)}")
    return pd.DataFrame(x, columns=names)


def sensor_series(rows: pd.DataFrame, ref: Reference, spec: MonitoringSpec) -> list[Series]:
    """The window's series: the mean of every reading and the predicted failure rate."""
    frame = sensor_frame(rows, ref)
    n = len(frame)
    out = [
        Series(
            name,
            "data",
            "both",
            float(frame[name].mean()) if n else math.nan,
            n,
            fr.mean,
            fr.sd,
            spec.min_parts,
            n_ref=ref.n,
        )
        for name, fr in ref.features.items()
    ]
    rate = float((rows["predicted_class"] != OK).mean()) if n else math.nan
    out.append(
        Series(
            FAILURE_RATE,
            "prediction",
            "both",
            rate,
            n,
            ref.defect_rate,
            bernoulli_sd(ref.defect_rate),
            spec.min_parts,
            n_ref=ref.n,
            binary=True,
        )
    )
    return out
