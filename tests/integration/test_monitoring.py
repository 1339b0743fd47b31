"""Monitoring for real: a trained champion with its reference, parts scored into the prediction
log, reviewed labels, the charts, alerts with hysteresis, the Evidently report, the flow."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from test_training_lifecycle import CFG, SMALL, _dataset
from typer.testing import CliRunner

from andon.cli.main import app
from andon.errors import DataError
from andon.labeling.labels import ReviewLog
from andon.storage import open_store
from andon.synth.images import Drift
from andon.synth.plant import synthesize_plant

pytestmark = pytest.mark.slow


def _score(store, cfg, seed: int, **knobs):  # type: ignore[no-untyped-def]
    from andon.scoring.batch import score_batch

    (batch,) = synthesize_plant(
        cfg, store, 80, seed=seed, start=datetime(2026, 11, 16, seed % 24, tzinfo=UTC), lines=["line-1"], workers=1,
        **knobs,
    )  # fmt: skip
    return score_batch(store, cfg, batch.prefix, explain=False), batch


def test_monitor_charts_alerts_once_and_clears(
    prefect_harness: None, andon_home: Path, mlflow_tracking_uri: str
) -> None:
    from andon.lifecycle.promotion import promote
    from andon.monitoring.monitor import ack_alert, list_alerts, monitor
    from andon.monitoring.reference import load_reference
    from andon.training.run import train_plant

    store = open_store()
    cfg = CFG.model_copy(
        update={
            "monitoring": CFG.monitoring.model_copy(
                update={"min_parts": 20, "min_labels": 10, "baseline_windows": 1, "clear_after_windows": 2}
            )
        }
    )
    out = train_plant(store, CFG, [_dataset(store, 7)], recipe=SMALL)
    promote(store, CFG, force=True, reason="test")
    ref, frame = load_reference(out.model_name, out.version)
    assert ref.n == len(frame) > 10 and set(ref.features) >= {"brightness", "sharpness", "emb_0"}
    assert 0.2 <= ref.temperature <= 9 and 0 <= ref.accuracy <= 1 and ref.version == out.version

    events: list[tuple[str, dict]] = []

    def emit(event: str, payload: dict, key: str) -> None:
        events.append((event, payload))

    t0 = datetime.now(UTC)
    _s, batch = _score(store, cfg, 11)
    t1 = datetime.now(UTC)
    # a person reviewed every part and agreed with the truth in the metadata
    from andon.data.batches import parquet_to_frame

    meta = parquet_to_frame(store.get(batch.metadata_key))
    ReviewLog(store, cfg.id).append(
        {"part_id": r.part_id, "label": r.label, "reviewed_at": datetime.now(UTC), "reviewer": "qa"}
        for r in meta.itertuples()
    )
    calm = monitor(store, cfg, end=t1, window=t1 - t0, emit=emit)
    assert calm.parts == 80 and calm.reviewed == 80 and calm.charted
    by = {v.series: v for v in calm.verdicts}
    assert by["brightness"].status == "baseline" and by["brightness"].n == 80, by["brightness"]  # Phase I
    assert not calm.alerts and not events

    # the light fails: half the brightness; the data-drift series breach and ONE alert per series opens
    _score(store, cfg, 12, drift=Drift(brightness=0.5))
    t2 = datetime.now(UTC)
    dark = monitor(store, cfg, end=t2, window=t2 - t1, emit=emit, drift_report=True)
    by = {v.series: v for v in dark.verdicts}
    assert by["brightness"].status == "breach" and by["brightness"].z < -5 and "shewhart" in by["brightness"].rules
    # (the label-free accuracy estimate may fall too: how confident this model stays in the dark)
    assert dark.alerts and "andon.drift.detected" in {e for e, _ in events}
    assert {e for e, _ in events} <= {"andon.drift.detected", "andon.performance.degraded"}
    first = next(a for a in dark.alerts if a["payload"]["series"] == "brightness")
    assert first["payload"]["shift"] < 0 and first["payload"]["report_key"] == dark.drift_report_key
    assert store.exists(dark.drift_report_key) and dark.drift_share is not None and dark.drift_share > 0
    assert dark.drift_scores and set(dark.drift_scores) <= set(ref.features)
    assert dark.charts_key and store.get(dark.charts_key)[:4] == b"\x89PNG"
    # many series breach at once, one cause: exactly one event starts a retrain (the most severe)
    leads = [p for _, p in events if p["starts_retrain"]]
    assert len(leads) == (1 if any(p["retrain"] for _, p in events) else 0) and len(events) == len(dark.alerts)
    # still dark in the next window: no second alert (hysteresis)
    brightness_alerts = [a for a in list_alerts(store, cfg.id) if a["payload"]["series"] == "brightness"]
    _score(store, cfg, 13, drift=Drift(brightness=0.5))
    t3 = datetime.now(UTC)
    again = monitor(store, cfg, end=t3, window=t3 - t2, emit=emit)
    assert {v.series: v for v in again.verdicts}["brightness"].status == "active"
    assert not [a for a in again.alerts if a["payload"]["series"] == "brightness"]
    assert [a for a in list_alerts(store, cfg.id) if a["payload"]["series"] == "brightness"] == brightness_alerts
    # rerunning an already charted window reports without charting twice
    assert not monitor(store, cfg, end=t3, window=t3 - t2).charted
    # the lamp is fixed: the condition clears after clear_after_windows (2) windows back in control,
    # and the record says when
    _score(store, cfg, 14)
    t4 = datetime.now(UTC)
    fixed = monitor(store, cfg, end=t4, window=t4 - t3, emit=emit)
    assert {v.series: v for v in fixed.verdicts}["brightness"].status == "recovering"
    assert not next(a for a in list_alerts(store, cfg.id) if a["id"] == first["id"])["cleared_at"]
    _score(store, cfg, 15)
    t5 = datetime.now(UTC)
    fixed = monitor(store, cfg, end=t5, window=t5 - t4, emit=emit)
    assert {v.series: v for v in fixed.verdicts}["brightness"].status == "cleared"
    assert next(a for a in list_alerts(store, cfg.id) if a["id"] == first["id"])["cleared_at"]

    # a person takes it
    acked = ack_alert(store, cfg.id, first["id"], "j.doe", "lamp replaced")
    assert acked["status"] == "acked" and list_alerts(store, cfg.id, "acked")[0]["acked_by"] == "j.doe"
    runner = CliRunner()
    res = runner.invoke(app, ["alerts", "list", "--plant", cfg.id], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and first["id"][:20] in res.stdout
    res = runner.invoke(app, ["alerts", "ack", "nope", "--plant", cfg.id, "--who", "x"])
    assert res.exit_code != 0 and "no alert" in str(res.exception)

    # the flow: table + link artifacts, events to the Prefect server
    from andon.flows.monitor import monitor_flow

    result = monitor_flow(plant=cfg.id, kind="hourly")
    assert result["drift_report_key"] and result["verdicts"]
    res = runner.invoke(app, ["monitor", "--plant", cfg.id, "--window", "2h", "--json"])
    assert res.exit_code in (0, 1), res.output
    assert json.loads(res.stdout)["model"] == out.model_name
    res = runner.invoke(app, ["monitor", "--plant", cfg.id, "--window", "30m"], env={"COLUMNS": "200"})
    assert res.exit_code in (0, 1) and "brightness" in res.stdout, res.output
    res = runner.invoke(app, ["monitor", "--plant", cfg.id, "--window", "forever"])
    assert res.exit_code != 0 and "not a duration" in str(res.exception)


def test_sensor_model_readings_are_monitored(sensor_champion) -> None:  # type: ignore[no-untyped-def]
    """The sensor champion's reference is stored at training; scoring logs the readings; a
    window of readings from the same distribution is quiet, a hot one alerts on the right series
    and Evidently sees it, with its own chart state beside the vision model's."""
    import pandas as pd

    from andon.config import load_plant
    from andon.events import DRIFT_DETECTED
    from andon.lifecycle.registry import SENSOR_TASK
    from andon.monitoring.monitor import monitor
    from andon.monitoring.reference import load_reference
    from andon.scoring.sensor import score_sensor_table
    from andon.training.sensor import AI4I_FEATURES

    path, out = sensor_champion
    store = open_store()
    cfg = load_plant("plant-a")
    ref, ref_frame = load_reference(out.model_name, out.version)
    assert list(ref.features) == list(AI4I_FEATURES) and ref.n == len(ref_frame) > 1000
    assert 0 < ref.defect_rate < 0.5 and "predicted_failure" in ref_frame

    table = pd.read_csv(path)
    events: list[tuple[str, dict]] = []

    def window(frame: pd.DataFrame):  # type: ignore[no-untyped-def]
        t0 = datetime.now(UTC)
        score_sensor_table(store, cfg, frame, explain=False)
        t1 = datetime.now(UTC)
        return monitor(store, cfg, end=t1 + timedelta(seconds=1), window=t1 - t0 + timedelta(seconds=2),
                       drift_report=True, emit=lambda e, p, k: events.append((e, p)), task=SENSOR_TASK)  # fmt: skip

    quiet = window(table.sample(1500, random_state=1))  # the same distribution, in random order
    assert quiet.parts == 1500 and quiet.model == out.model_name
    by = {v.series: v for v in quiet.verdicts}
    assert set(by) == {*AI4I_FEATURES, "failure_rate", "evidently_drift_share"}
    assert not quiet.breaches and not events, [(v.series, v.z) for v in quiet.verdicts]
    assert quiet.drift_report_key and store.exists(quiet.drift_report_key) and quiet.drift_share < 0.5

    hot = table.sample(1500, random_state=2)
    hot["Air temperature [K]"] += 4.0  # a cooling fault: 2 sd of the air temperature
    drifted = window(hot)
    by = {v.series: v for v in drifted.verdicts}
    assert by["Air temperature [K]"].status == "breach" and by["Air temperature [K]"].z > 5
    assert by["Rotational speed [rpm]"].status == "baseline"  # still Phase I: 72 windows set the baseline
    assert [p["series"] for e, p in events if e == DRIFT_DETECTED] == [
        v.series for v in drifted.verdicts if v.status == "breach"
    ]
    # Evidently's score here is the normed Wasserstein distance (drift above 0.1)
    assert drifted.drift_scores["Air temperature [K]"] > 0.1 > quiet.drift_scores["Air temperature [K]"]
    assert store.exists("monitoring/plant-a/machine-failure/state.json")
    assert not store.exists("monitoring/plant-a/state.json")  # the vision model's charts are its own
    with pytest.raises(DataError, match="no monitoring for task"):
        monitor(store, cfg, task="welding")


def test_queued_monitor_runs_each_chart_the_window_they_were_scheduled_for(
    prefect_harness: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16 point 12: a worker that starts late finds several scheduled monitor runs; each
    must chart its own window (its scheduled start), not "now minus 5 minutes" eight times."""
    from prefect import get_client
    from prefect.flow_engine import run_flow
    from prefect.states import Scheduled

    from andon.flows.monitor import monitor_flow
    from andon.monitoring import monitor as monitoring

    windows: list[tuple[datetime, timedelta | None]] = []

    def recording_monitor(store, cfg, *, end=None, window=None, **_kw):  # type: ignore[no-untyped-def]
        windows.append((end, window))
        w = window or timedelta(minutes=cfg.monitoring.window_minutes)
        return monitoring.MonitorResult(cfg.id, "m", 1, end - w, end, 0, 0, [])

    monkeypatch.setattr(monitoring, "monitor", recording_monitor)
    params = {"plant": "plant-a", "kind": "incremental", "task": "machine-failure"}  # no labeling step
    due = [datetime(2026, 11, 30, 8, 0, tzinfo=UTC) + timedelta(minutes=5 * i) for i in range(3)]
    with get_client(sync_client=True) as client:
        queued = [
            client.create_flow_run(monitor_flow, parameters=params, state=Scheduled(scheduled_time=t)) for t in due
        ]
    for flow_run in queued:  # the late worker runs them now, one after another
        result = run_flow(monitor_flow, flow_run=flow_run, parameters=params)
        assert result["end"] == due[queued.index(flow_run)].isoformat()
    assert [end for end, _w in windows] == due
    # an explicit `at` still wins; a run started by hand charts up to when it was created
    windows.clear()
    before = datetime.now(UTC)
    monitor_flow(**params)
    monitor_flow(**params, at="2026-11-30T07:00:00+00:00")
    assert before - timedelta(seconds=1) <= windows[0][0] <= datetime.now(UTC)
    assert windows[1][0] == datetime(2026, 11, 30, 7, tzinfo=UTC)
