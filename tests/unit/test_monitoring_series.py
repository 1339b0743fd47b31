"""Window series and the Phase I / Phase II charting of the monitor (no registry needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from andon.config import MonitoringSpec, load_plant
from andon.monitoring.charts import Limits
from andon.monitoring.monitor import chart_series, rule_24h
from andon.monitoring.reference import EMBEDDING_FEATURES, FeatureRef, Reference, extreme_transforms
from andon.monitoring.series import window_series

SPEC = MonitoringSpec(min_parts=20, min_labels=10, baseline_windows=4)
LIMITS = Limits.for_budget(charts=60, windows_per_30_days=8640)


def _ref() -> Reference:
    feats = {"brightness": FeatureRef(120.0, 20.0, tol_down=10.0, tol_up=10.0), "contrast": FeatureRef(40.0, 5.0)}
    feats |= {c: FeatureRef(0.0, 1.0) for c in EMBEDDING_FEATURES}
    return Reference(
        model_name="m", version=1, n=400, classes=["ok", "defect"], features=feats, defect_rate=0.05,
        confidence=FeatureRef(0.95, 0.05), entropy=FeatureRef(0.15, 0.1), accuracy=0.95, defect_recall=0.9,
        temperature=1.2, estimated_accuracy=FeatureRef(0.94, 0.05),
    )  # fmt: skip


def _rows(n: int, rng: np.random.Generator, brightness: float = 120.0, defect_share: float = 0.05) -> pd.DataFrame:
    defect = rng.random(n) < defect_share
    p_def = np.where(defect, 0.9, 0.05)
    return pd.DataFrame(
        {
            "part_id": [f"p{i}" for i in range(n)],
            "brightness": rng.normal(brightness, 20, n),
            "contrast": rng.normal(40, 5, n),
            "sharpness": rng.normal(300, 30, n),
            "embedding": list(rng.normal(0, 1, (n, 8))),
            "probabilities": list(np.stack([1 - p_def, p_def], 1)),
            "entropy": rng.normal(0.15, 0.1, n),
            "predicted_class": np.where(defect, "defect", "ok"),
        }
    )


def test_window_series_means_and_reviewed_accuracy() -> None:
    rng = np.random.default_rng(0)
    rows = _rows(500, rng)
    labels = pd.DataFrame({"part_id": rows.part_id[:50], "label": rows.predicted_class[:50]})
    labels.loc[:4, "label"] = np.where(labels.loc[:4, "label"] == "ok", "defect", "ok")  # 5 of 50 wrong
    series = {s.name: s for s in window_series(rows, _ref(), labels, SPEC)}
    assert series["brightness"].value == pytest.approx(rows.brightness.mean())
    assert series["emb_3"].value == pytest.approx(np.stack(rows.embedding)[:, 3].mean())
    assert series["accuracy"].value == pytest.approx(0.9) and series["accuracy"].n == 50
    assert series["defect_rate"].value == pytest.approx((rows.predicted_class == "defect").mean())
    assert series["accuracy"].detect_shift == SPEC.accuracy_drop_to_detect and series["brightness"].baseline
    few = {s.name: s for s in window_series(rows.iloc[:5], _ref(), None, SPEC)}
    assert not few["brightness"].ready and few["brightness"].z == 0.0  # one bad image never alerts
    assert np.isnan(few["accuracy"].value)


def test_phase_one_then_two_with_the_tolerance_band() -> None:
    rng = np.random.default_rng(1)
    ref, state = _ref(), {"charts": {}, "active": {}}

    def window(brightness: float) -> str:
        s = {x.name: x for x in window_series(_rows(3000, rng, brightness), ref, None, SPEC)}["brightness"]
        return chart_series(state, s, LIMITS, True, SPEC.baseline_windows).status

    assert [window(121.0) for _ in range(4)] == ["baseline"] * 4
    assert len(state["baseline"]["brightness"]) == 4
    assert all(window(121.0) == "ok" for _ in range(20))
    assert window(127.0) == "ok"  # +6 grey levels: inside the +-10 the augmentations cover
    assert window(95.0) == "breach"  # -25: outside the band, many sd of the window mean


def test_a_gross_departure_alarms_during_phase_one_and_stays_out_of_the_baseline() -> None:
    rng = np.random.default_rng(2)
    ref, state = _ref(), {"charts": {}, "active": {}}
    s = {x.name: x for x in window_series(_rows(3000, rng, 60.0), ref, None, SPEC)}["brightness"]
    assert chart_series(state, s, LIMITS, True, SPEC.baseline_windows).status == "breach"
    assert state["baseline"]["brightness"] == []


def test_the_common_24h_rule_and_tolerance_transforms_from_the_recipe() -> None:
    ref = _ref()
    assert rule_24h(0.93, 10_000, ref) and not rule_24h(0.949, 100, ref) and not rule_24h(float("nan"), 0, ref)
    names = [n for n, _ in extreme_transforms(load_plant("plant-a").recipe)]
    assert {"brightness +0.15", "brightness -0.15", "contrast +0.15", "gamma 0.85", "blur 3x3"} <= set(names)
    grey = np.full((16, 16), 100, np.uint8)
    moved = dict(extreme_transforms(load_plant("plant-a").recipe))["brightness +0.15"](grey)
    assert int(moved[0, 0]) == 138
