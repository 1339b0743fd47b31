"""Issue 16 point 12, the monitoring parts found on a real day: a gross departure of an image
statistic alarms in Phase I and Phase II whatever its z; an alert clears only after its series was
back in control for ``clear_after_windows`` charted windows; alert ids are never cut at 80
columns; ``andon worker`` points the worker at Andon's Prefect server."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from andon.config import MonitoringSpec, load_plant
from andon.monitoring.charts import Limits
from andon.monitoring.monitor import MonitorResult, Verdict, _alerts, chart_series
from andon.monitoring.series import Series
from andon.storage import LocalObjectStore

SPEC = MonitoringSpec()
LIMITS = Limits.for_budget(charts=60, windows_per_30_days=8640)
CFG = load_plant("plant-a")


def _lamp(stat: str, ref_mean: float, value: float, ref_sd: float) -> Series:
    """A window after the lamp failed, charted against a reference with a wide spread (the
    production reference mixes SKUs), as on the plant: |z| stays under the Shewhart limit."""
    return Series(stat, "data", "both", value, 60, ref_mean, ref_sd, 20, n_ref=400, gross=SPEC.gross_relative_change)


@pytest.mark.parametrize(("stat", "ref_mean", "value", "ref_sd"), [("brightness", 113.0, 65.0, 128.0),
                                                                  ("sharpness", 199.0, 2.3, 650.0)])  # fmt: skip
def test_a_gross_departure_alarms_in_phase_one_and_two(stat: str, ref_mean: float, value: float, ref_sd: float) -> None:
    s = _lamp(stat, ref_mean, value, ref_sd)
    assert -3.2 < s.z < -2.0 and abs(s.z) < LIMITS.shewhart  # the z rule alone stays silent (as reported)
    phase1: dict[str, Any] = {"charts": {}, "active": {}}
    v = chart_series(phase1, s, LIMITS, True, baseline_windows=24)
    assert (v.status, v.rules) == ("breach", ["relative-change"])
    assert phase1["baseline"][stat] == []  # a breaching window never becomes "normal"

    normal = _lamp(stat, ref_mean, ref_mean * 1.02, ref_sd)
    phase2: dict[str, Any] = {"charts": {}, "active": {}, "baseline": {stat: [ref_mean * f for f in (0.98, 1.0, 1.02)]}}
    assert chart_series(phase2, normal, LIMITS, True, baseline_windows=3).status == "ok"
    v = chart_series(phase2, s, LIMITS, True, baseline_windows=3)
    assert v.status == "breach" and "relative-change" in v.rules


def test_the_relative_rule_spares_small_moves_embeddings_and_can_be_turned_off() -> None:
    state: dict[str, Any] = {"charts": {}, "active": {}}
    assert chart_series(state, _lamp("brightness", 113.0, 90.0, 128.0), LIMITS).status == "baseline"  # -20 %
    emb = Series("emb_0", "data", "both", 0.5, 60, 0.01, 5.0, 20, n_ref=400)  # centred on ~0: no relative rule
    assert chart_series(state, emb, LIMITS).status == "baseline"
    off = Series("brightness", "data", "both", 65.0, 60, 113.0, 128.0, 20, n_ref=400, gross=0.0)
    assert chart_series({"charts": {}, "active": {}}, off, LIMITS).status == "baseline"


def test_window_series_gives_the_rule_to_image_statistics_only() -> None:
    import numpy as np
    import pandas as pd

    from andon.monitoring.reference import EMBEDDING_FEATURES, FeatureRef, Reference
    from andon.monitoring.series import window_series

    feats = {"brightness": FeatureRef(113.0, 128.0), "sharpness": FeatureRef(199.0, 650.0)}
    feats |= {c: FeatureRef(0.0, 1.0) for c in EMBEDDING_FEATURES}
    ref = Reference(
        model_name="m", version=1, n=400, classes=["ok", "defect"], features=feats, defect_rate=0.05,
        confidence=FeatureRef(0.95, 0.05), entropy=FeatureRef(0.15, 0.1), accuracy=0.95, defect_recall=0.9,
        temperature=1.2, estimated_accuracy=FeatureRef(0.94, 0.05),
    )  # fmt: skip
    n = 60
    rows = pd.DataFrame(
        {
            "part_id": [f"p{i}" for i in range(n)],
            "brightness": np.full(n, 65.0),
            "contrast": np.full(n, 40.0),
            "sharpness": np.full(n, 2.3),
            "embedding": list(np.zeros((n, 8))),
            "probabilities": list(np.tile([0.9, 0.1], (n, 1))),
            "entropy": np.full(n, 0.2),
            "predicted_class": ["ok"] * n,
        }
    )
    by = {s.name: s for s in window_series(rows, ref, None, MonitoringSpec(min_parts=20))}
    assert by["brightness"].gross_departure and by["sharpness"].gross_departure
    assert by["emb_0"].gross == 0.0 and by["confidence"].gross == 0.0


def _result(status: str, charted: bool = True, end: datetime | None = None) -> MonitorResult:
    end = end or datetime(2026, 11, 30, 10, tzinfo=UTC)
    verdict = Verdict("contrast", "data", 30.0, 40.0, 80, -6.0 if status == "breach" else 0.1, [], status)
    return MonitorResult("plant-a", "plant-a.surface-defects", 1, end - timedelta(minutes=5), end, 80, 0, [verdict],
                         charted=charted)  # fmt: skip


def test_an_alert_clears_only_after_enough_windows_back_in_control(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    state: dict[str, Any] = {"active": {}, "charts": {}}

    def run(status: str, charted: bool = True) -> str:
        result = _result(status, charted)
        _alerts(store, CFG, state, result, None, None, clear_after=3)  # type: ignore[arg-type]
        return result.verdicts[0].status

    assert run("breach") == "breach"
    (alert_id,) = state["active"].values()
    key = f"alerts/plant-a/{alert_id}.json"
    # the hourly run re-reads windows the 5-minute runs charted: it proves nothing and clears nothing
    assert [run("ok", charted=False) for _ in range(5)] == ["active"] * 5
    assert [run("ok"), run("ok")] == ["recovering", "recovering"]
    assert run("breach") == "active"  # still drifting: the count starts over, no second alert
    assert [run("ok"), run("baseline")] == ["recovering", "recovering"]
    assert json.loads(store.get(key))["cleared_at"] is None
    assert run("waiting") == "waiting"  # too few parts: neither in control nor out
    assert run("ok") == "cleared"
    assert json.loads(store.get(key))["cleared_at"]
    assert state["active"] == {} and state["calm"] == {}
    assert len(list(store.list("alerts/plant-a/"))) == 1


def test_alert_ids_survive_an_80_column_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from andon.cli.main import app

    monkeypatch.setenv("ANDON_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ANDON_OBJECT_STORE_URL", raising=False)
    store = LocalObjectStore(tmp_path / "home" / "objects")
    ids = []
    for i, series in enumerate(("estimated_accuracy", "overkill_rate", "brightness")):
        aid = f"20261130T10{i}500-{series}-{i}a2b3c"
        ids.append(aid)
        record = {
            "id": aid, "event": "andon.performance.degraded", "status": "open", "opened_at": f"2026-11-30T10:0{i}:00",
            "acked_by": None, "acked_at": None, "cleared_at": None,
            "payload": {"series": series, "severity": "critical"},
        }  # fmt: skip
        store.put(f"alerts/plant-a/{aid}.json", json.dumps(record).encode(), "application/json")
    out = CliRunner().invoke(app, ["alerts", "list", "--plant", "plant-a"], env={"COLUMNS": "80"})
    assert out.exit_code == 0, out.output
    assert max(len(line) for line in out.output.splitlines()) <= 80
    for aid in ids:
        assert aid in out.output, out.output  # whole, on one line: copy it into `andon alerts ack`


def test_andon_worker_starts_the_plants_worker_against_andons_prefect(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from andon.cli.main import app

    seen: dict[str, Any] = {}

    def fake_exec(path: str, args: list[str], env: dict[str, str]) -> None:
        seen.update(path=path, args=args, env=env)

    monkeypatch.setattr(os, "execvpe", fake_exec)
    monkeypatch.setattr(os, "chdir", lambda _path: None)
    monkeypatch.setenv("ANDON_PREFECT_API_URL", "http://10.0.0.5:4242/api")
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    out = CliRunner().invoke(app, ["worker", "--plant", "plant-b"])
    assert out.exit_code == 0, out.output
    assert seen["args"][1:] == ["-m", "prefect", "worker", "start", "--pool", "andon-plant-b", "--type", "process"]
    assert seen["env"]["PREFECT_API_URL"] == "http://10.0.0.5:4242/api"
    assert not any("AUTH" in a or "://" in a for a in seen["args"])  # nothing secret or addressed on the command line
