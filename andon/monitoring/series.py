"""The monitored series of one window: cheap statistics of the prediction log (and of the
reviewed labels joined to it), each with its reference, tolerance and minimum sample size.

Data drift: the mean of every drift feature (image statistics, embedding dimensions).
Prediction drift: defect rate, mean confidence, mean entropy.
Performance, in the floor's words first: the escape rate (reviewed defects the model passed)
and the overkill rate (reviewed good parts it rejected), both at the version's operating point
(scoring logs its decisions), then accuracy on reviewed parts and the label-free estimate (mean
temperature-calibrated confidence); all one-sided: only a worsening is an alarm. The reviewed
series carry the change a plant wants caught fast (``accuracy_drop_to_detect``): their CUSUM is
tuned to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from andon.monitoring.charts import z_score
from andon.monitoring.reference import (
    DRIFT_FEATURES,
    EMBEDDING_FEATURES,
    IMAGE_FEATURES,
    Reference,
    calibrated_confidence,
)

if TYPE_CHECKING:
    import pandas as pd

    from andon.config import MonitoringSpec

Kind = Literal["data", "prediction", "performance"]
Direction = Literal["both", "down", "up"]
REVIEWED = ("escape_rate", "overkill_rate", "accuracy")  # on reviewed labels: their own false-alarm budget share
COLUMNS = "part_id, scored_at, brightness, contrast, sharpness, embedding, probabilities, entropy, predicted_class"


@dataclass(frozen=True)
class Series:
    name: str
    kind: Kind
    direction: Direction
    value: float
    n: int
    ref_mean: float
    ref_sd: float
    min_n: int
    tol_down: float = 0.0
    tol_up: float = 0.0
    n_ref: int = 0  # parts behind the reference mean: its own error widens the test
    baseline: bool = True  # charted against the first windows of production (Phase I), not the reference
    detect_shift: float = 0.0  # a drop of interest (value units): its CUSUM is tuned to catch it fast
    binary: bool = False  # a share of 0/1 outcomes: its noise follows from its mean (sqrt(p (1 - p) / n))
    gross: float = 0.0  # a relative change from the reference mean that alarms whatever its z (0: off)

    @property
    def ready(self) -> bool:
        return self.n >= self.min_n and not math.isnan(self.value)

    @property
    def relative_change(self) -> float:
        """(window mean - reference mean) / |reference mean|; 0 where the reference mean is ~0."""
        if not self.ready or abs(self.ref_mean) < 1e-9:
            return 0.0
        return (self.value - self.ref_mean) / abs(self.ref_mean)

    @property
    def gross_departure(self) -> bool:
        """A departure no plausible spread explains: a lamp failure took brightness from 113 to 65
        and sharpness from 199 to 2.3 at z of only -2.9 / -2.3, the reference spread being wide.
        Judged the same in Phase I and Phase II."""
        return self.gross > 0 and abs(self.relative_change) >= self.gross

    @property
    def z(self) -> float:
        """z-score against the reference (tolerance band applied, one-sided where it applies)."""
        if not self.ready:
            return 0.0
        shift = self.value - self.ref_mean
        tol = self.tol_up if shift > 0 else self.tol_down
        n_eff = self.n if not self.n_ref else 1 / (1 / self.n + 1 / self.n_ref)
        return self.clip(z_score(self.value, max(1, round(n_eff)), self.ref_mean, self.ref_sd, tol))

    def z_against(self, mu0: float, sd0: float, windows: int = 0) -> float:
        """Phase II z-score against the production baseline ``mu0 +- sd0`` (sd of window means
        over ``windows`` baseline windows); the tolerance band around the reference still absorbs
        shifts the model was trained on, and a dead zone of two standard errors of ``mu0`` absorbs
        the baseline's own estimation error (without it CUSUM turns that error into alarms).
        Performance series are charted against the baseline alone: a drop from how well the model
        does in production is the news, even where it stays above the (small) validation split's
        accuracy."""
        if not self.ready or sd0 <= 0:
            return 0.0
        dead = 2 * sd0 / math.sqrt(windows) if windows else 0.0
        upper, lower = mu0 + dead, mu0 - dead
        if self.kind != "performance":
            upper, lower = max(self.ref_mean + self.tol_up, upper), min(self.ref_mean - self.tol_down, lower)
        if self.value > upper:
            z = (self.value - upper) / sd0
        elif self.value < lower:
            z = (self.value - lower) / sd0
        else:
            z = 0.0
        return self.clip(z)

    def clip(self, z: float) -> float:
        if self.direction == "down":
            return min(z, 0.0)
        if self.direction == "up":
            return max(z, 0.0)
        return z


def bernoulli_sd(p: float) -> float:
    return math.sqrt(max(p * (1 - p), 1e-4))


def series_names(ref: Reference) -> list[str]:
    return [*ref.features, "defect_rate", "confidence", "entropy", "estimated_accuracy", *REVIEWED]


def window_series(
    rows: pd.DataFrame, ref: Reference, labels: pd.DataFrame | None, spec: MonitoringSpec
) -> list[Series]:
    """Every monitored series over ``rows`` (the scored parts of one model in the window)."""
    import numpy as np

    n = len(rows)
    out: list[Series] = []
    emb = np.stack(rows["embedding"].to_numpy()) if n and "embedding" in rows else np.zeros((0, 0))
    for name, fr in ref.features.items():
        if name in EMBEDDING_FEATURES:
            i = EMBEDDING_FEATURES.index(name)
            value = float(emb[:, i].mean()) if n and emb.shape[1] > i else float("nan")
        elif name in DRIFT_FEATURES and name in rows:
            value = float(rows[name].mean()) if n else float("nan")
        else:
            continue
        gross = spec.gross_relative_change if name in IMAGE_FEATURES else 0.0  # not embeddings: centred on ~0
        out.append(
            Series(
                name,
                "data",
                "both",
                value,
                n,
                fr.mean,
                fr.sd,
                spec.min_parts,
                fr.tol_down,
                fr.tol_up,
                ref.n,
                gross=gross,
            )
        )
    probs = np.stack(rows["probabilities"].to_numpy()) if n else np.zeros((0, len(ref.classes)))
    first = ref.classes[0]
    defect_rate = float((rows["predicted_class"] != first).mean()) if n else float("nan")
    out.append(
        Series(
            "defect_rate",
            "prediction",
            "both",
            defect_rate,
            n,
            ref.defect_rate,
            bernoulli_sd(ref.defect_rate),
            spec.min_parts,
            n_ref=ref.n,
            binary=True,
        )
    )
    conf = float(probs.max(1).mean()) if n else float("nan")
    cf, en, ea = ref.confidence, ref.entropy, ref.estimated_accuracy
    out.append(Series("confidence", "prediction", "down", conf, n, cf.mean, cf.sd, spec.min_parts, n_ref=ref.n))
    ent = float(rows["entropy"].mean()) if n else float("nan")
    out.append(Series("entropy", "prediction", "up", ent, n, en.mean, en.sd, spec.min_parts, n_ref=ref.n))
    est = float(calibrated_confidence(probs, ref.temperature).mean()) if n else float("nan")
    out.append(Series("estimated_accuracy", "performance", "down", est, n, ea.mean, ea.sd, spec.min_parts, n_ref=ref.n))

    rev = _reviewed(rows, labels, first)
    ref_escape = ref.escape_rate if not math.isnan(ref.escape_rate) else 1 - ref.defect_recall
    for name, value, count, ref_value, min_n in (
        ("escape_rate", rev.escape, rev.defects, ref_escape, max(5, spec.min_labels // 4)),
        ("overkill_rate", rev.overkill, rev.goods, ref.overkill_rate, spec.min_labels),
    ):
        if math.isnan(ref_value):
            continue
        out.append(
            Series(
                name,
                "performance",
                "up",
                value,
                count,
                ref_value,
                bernoulli_sd(ref_value),
                min_n,
                detect_shift=spec.accuracy_drop_to_detect,
                binary=True,
            )
        )
    out.append(
        Series(
            "accuracy",
            "performance",
            "down",
            rev.accuracy,
            rev.n,
            ref.accuracy,
            bernoulli_sd(ref.accuracy),
            spec.min_labels,
            n_ref=ref.n,
            detect_shift=spec.accuracy_drop_to_detect,
            binary=True,
        )
    )
    return out


@dataclass(frozen=True)
class Reviewed:
    """What the window's reviewed parts say about the decisions made on them."""

    n: int = 0
    accuracy: float = float("nan")
    defects: int = 0
    escape: float = float("nan")  # reviewed defects passed as ok
    goods: int = 0
    overkill: float = float("nan")  # reviewed good parts rejected


def _reviewed(rows: pd.DataFrame, labels: pd.DataFrame | None, first: str) -> Reviewed:
    if labels is None or labels.empty or rows.empty:
        return Reviewed()
    joined = rows[["part_id", "predicted_class"]].merge(labels[["part_id", "label"]], on="part_id")
    if joined.empty:
        return Reviewed()
    correct = joined["predicted_class"] == joined["label"]
    defects = joined["label"] != first
    passed = joined["predicted_class"] == first
    kd, kg = int(defects.sum()), int((~defects).sum())
    return Reviewed(
        n=len(joined),
        accuracy=float(correct.mean()),
        defects=kd,
        escape=float(passed[defects].mean()) if kd else float("nan"),
        goods=kg,
        overkill=float((~passed[~defects]).mean()) if kg else float("nan"),
    )
