"""One monitoring run over a window of the prediction log: the series, the charts, the common
24-hour plant rule, optionally the Evidently drift report, and the alerts.

State (chart statistics, which conditions are active, the last window charted) lives at
``monitoring/<plant>/state.json`` and restarts when the champion changes. A run over a window
that was already charted reports but does not update the charts again, so rerunning is safe.
Alerts: a breach opens an escalation record ``alerts/<plant>/<alert-id>.json`` (status
``open`` -> ``acked`` by a person; ``cleared_at`` when the condition clears) and emits
``andon.drift.detected`` or ``andon.performance.degraded``. While a condition stays active it
does not alert again (hysteresis); it clears only after its series was back in control for
``monitoring.clear_after_windows`` charted windows in a row (a rerun of a window already charted
never clears anything). A gross departure of an image statistic (``monitoring.gross_relative_change``
of its reference mean) alarms in Phase I and Phase II whatever its z.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from andon.config import PlantConfig
from andon.errors import DataError, ObjectNotFoundError
from andon.events import DRIFT_DETECTED, PERFORMANCE_DEGRADED
from andon.lifecycle.registry import SENSOR_TASK
from andon.monitoring.charts import Budget, ChartState, Limits, reset, update
from andon.monitoring.reference import Reference, load_reference
from andon.monitoring.sensor import SENSOR_COLUMNS, sensor_frame, sensor_series, sensor_series_names
from andon.monitoring.series import COLUMNS, REVIEWED, Series, bernoulli_sd, series_names, window_series
from andon.storage import ObjectStore, join_key

if TYPE_CHECKING:
    import pandas as pd

CHARTS_PER_SERIES = 3
Emit = Callable[[str, dict[str, Any], str], None]  # (event name, payload, event key)


@dataclass
class Verdict:
    series: str
    kind: str
    value: float
    reference: float  # what the window was charted against (Phase II: the production baseline)
    n: int
    z: float
    rules: list[str]
    # ok | baseline (Phase I) | waiting (few samples) | breach | active (alerted) | recovering (alerted, back in
    # control for fewer than clear_after_windows windows) | cleared | flagged
    status: str
    relative_change: float | None = None  # (value - reference mean) / |reference mean| of the window


@dataclass
class MonitorResult:
    plant: str
    model: str
    version: int
    start: datetime
    end: datetime
    parts: int
    reviewed: int
    verdicts: list[Verdict]
    alerts: list[dict[str, Any]] = field(default_factory=list)
    drift_report_key: str | None = None
    drift_share: float | None = None
    drift_scores: dict[str, float] = field(default_factory=dict)
    charts_key: str | None = None
    charted: bool = True

    @property
    def breaches(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.status in ("breach", "active")]


def _reference(name: str, version: int) -> tuple[Reference, pd.DataFrame]:
    """A version's reference, loaded once per process and registry (versions are immutable)."""
    from andon.settings import get_settings

    return _reference_cached(name, version, get_settings().mlflow_tracking_uri)


@lru_cache(maxsize=8)
def _reference_cached(name: str, version: int, registry: str) -> tuple[Reference, pd.DataFrame]:
    return load_reference(name, version)


def budget_for(cfg: PlantConfig, ref: Reference, sensor: bool = False) -> Budget:
    """The plant's false-alarm budget over this model's series (the 24 h rule never alerts): the
    sensor model gets ``monitoring.sensor_budget_share`` of it, the vision model the rest."""
    spec = cfg.monitoring
    names = sensor_series_names(ref) if sensor else series_names(ref)
    reviewed = sum(1 for n in names if n in REVIEWED and not sensor)
    share = spec.sensor_budget_share if sensor else 1 - spec.sensor_budget_share
    return Budget(
        30 * 24 * 60 / spec.window_minutes,
        spec.false_alarms_per_30_days * share,
        reviewed * CHARTS_PER_SERIES,
        (len(names) - reviewed) * CHARTS_PER_SERIES,
        spec.reviewed_budget_share,
    )


def limits_of(budget: Budget, s: Series) -> Limits:
    return budget.limits(s.name in REVIEWED, s.direction != "both")


def _state_key(plant: str, task: str | None = None) -> str:
    """The vision champion's state at ``monitoring/<plant>/state.json``, another task's at
    ``monitoring/<plant>/<task>/state.json``."""
    return join_key("monitoring", plant, *([task] if task else []), "state.json")


def load_state(store: ObjectStore, plant: str, model: str, version: int, task: str | None = None) -> dict[str, Any]:
    try:
        state = json.loads(store.get(_state_key(plant, task)))
    except ObjectNotFoundError:
        state = {}
    if state.get("model") != model or state.get("version") != version:  # a new champion starts afresh
        state = {"model": model, "version": version, "charts": {}, "active": {}, "last_end": None}
    return state


def rule_24h(accuracy_24h: float, n: int, ref: Reference) -> bool:
    """The common plant rule: 24-hour mean accuracy more than one standard deviation below the
    historical mean (here: the reference accuracy; sd of a 24 h mean of ``n`` reviewed parts)."""
    if n < 1 or math.isnan(accuracy_24h):
        return False
    sd = math.sqrt(max(ref.accuracy * (1 - ref.accuracy), 1e-4) / n)
    return accuracy_24h < ref.accuracy - sd


def monitor(
    store: ObjectStore,
    cfg: PlantConfig,
    *,
    end: datetime | None = None,
    window: timedelta | None = None,
    drift_report: bool = False,
    emit: Emit | None = None,
    task: str | None = None,
) -> MonitorResult:
    """Monitor the plant's champion over ``[end - window, end)``: the vision model by default,
    the sensor model with ``task="machine-failure"`` (see andon/monitoring/sensor.py)."""
    from andon.labeling.labels import ReviewLog
    from andon.scoring.batch import resolve_champion
    from andon.scoring.predlog import PredictionLog

    end = end or datetime.now(UTC)
    if end.tzinfo is None:
        raise DataError("give the monitoring time with a timezone")
    window = window or timedelta(minutes=cfg.monitoring.window_minutes)
    start = end - window
    sensor = task == SENSOR_TASK
    if task not in (None, cfg.recipe.task, SENSOR_TASK):
        raise DataError(f"no monitoring for task {task!r}: {cfg.recipe.task} (vision) or {SENSOR_TASK} (sensor)")
    state_task = SENSOR_TASK if sensor else None
    name, version = resolve_champion(cfg, task)
    ref, ref_frame = _reference(name, version)
    log = PredictionLog(store, cfg.id)
    where = "model_name = ? and model_version = ? and error is null"
    rows = log.read(start, end, where=where, columns=SENSOR_COLUMNS if sensor else COLUMNS, params=[name, version])
    if sensor:
        series = sensor_series(rows, ref, cfg.monitoring)
    else:
        labels = ReviewLog(store, cfg.id).read(start, end + timedelta(days=1))
        series = window_series(rows, ref, labels, cfg.monitoring)
    state = load_state(store, cfg.id, name, version, state_task)
    charted = state["last_end"] is None or datetime.fromisoformat(state["last_end"]) <= start
    budget = budget_for(cfg, ref, sensor)
    state["window_end"] = end.isoformat()  # the charts' time axis
    verdicts = [chart_series(state, s, limits_of(budget, s), charted, cfg.monitoring.baseline_windows) for s in series]
    for s, v in zip(series, verdicts, strict=True):
        if s.ready:
            v.relative_change = round(s.relative_change, 4)

    if not sensor and (drift_report or window >= timedelta(hours=1)):  # the plant rule is an hourly check: the
        verdicts.append(_rule_24h_verdict(store, cfg, log, where, name, version, end, ref))  # 5-min run skips it
    result = MonitorResult(
        cfg.id,
        name,
        version,
        start,
        end,
        len(rows),
        int(next((s.n for s in series if s.name == "accuracy"), 0)),
        verdicts,
        charted=charted,
    )
    if drift_report:
        from andon.monitoring.drift import drift_report as run_report

        current = sensor_frame(rows, ref) if sensor else rows
        key, share, scores = run_report(store, cfg, ref_frame, current, end, columns=list(ref.features))
        result.drift_report_key, result.drift_share, result.drift_scores = key, share, scores
        hit = share >= 0.5
        verdicts.append(
            Verdict(
                "evidently_drift_share",
                "data",
                share,
                0.0,
                len(rows),
                0.0,
                ["evidently"] if hit else [],
                "breach" if hit else "ok",
            )
        )
    result.alerts = _alerts(store, cfg, state, result, ref, emit, cfg.monitoring.clear_after_windows)
    if drift_report or result.alerts:  # a picture for the report and for whoever takes the alert
        from andon.monitoring.drift import charts_png

        history = {k: v.get("history", []) for k, v in state["charts"].items()}
        bounds = {s.name: _bounds(limits_of(budget, s).shewhart, s.direction) for s in series}
        result.charts_key = join_key("reports", cfg.id, "charts", f"{end:%Y%m%dT%H%M%S}.png")
        title = f"{cfg.id} {name} v{version}: window z-scores and Shewhart limits"
        store.put(result.charts_key, charts_png(history, bounds, title), "image/png")
    if charted:
        state["last_end"] = end.isoformat()
    store.put(_state_key(cfg.id, state_task), json.dumps(state).encode(), "application/json")
    return result


def _bounds(limit: float, direction: str) -> tuple[float | None, float | None]:
    return (None if direction == "up" else -limit, None if direction == "down" else limit)


@lru_cache(maxsize=256)
def tuned_limits(limits: Limits, k: float) -> Limits:
    """``limits`` with the CUSUM re-solved for reference value ``k`` at the same in-control ARL."""
    from dataclasses import replace

    from andon.monitoring.charts import cusum_limit

    return replace(limits, cusum_k=k, cusum_h=cusum_limit(limits.arl0, k))


def chart_series(
    state: dict[str, Any], s: Series, limits: Limits, charted: bool = True, baseline_windows: int = 24
) -> Verdict:
    """Chart one series' window (pure: only ``state`` changes). Baseline series first collect
    ``baseline_windows`` windows of production (Phase I: only a gross departure from the
    reference alarms), then are charted against that baseline's mean and window-to-window sd
    (Phase II). Series with ``baseline=False`` are charted against the reference throughout."""
    import numpy as np

    if not s.ready:
        return Verdict(s.name, s.kind, s.value, s.ref_mean, s.n, 0.0, [], "waiting")
    base: list[float] = state.setdefault("baseline", {}).setdefault(s.name, [])
    relative = ["relative-change"] if s.gross_departure else []
    if s.baseline and len(base) < baseline_windows:
        z = s.z
        rules = (["shewhart"] if abs(z) > limits.shewhart else []) + relative
        if charted and not rules:  # a window that breaches never becomes part of "normal"
            base.append(s.value)
        return Verdict(s.name, s.kind, s.value, s.ref_mean, s.n, round(z, 3), rules,
                       "breach" if rules else "baseline")  # fmt: skip
    reference = s.ref_mean
    if s.baseline:
        mu0 = reference = float(np.mean(base))
        spread = float(np.std(base, ddof=1)) if len(base) > 1 else 0.0
        # the window's own sampling noise is the floor: for a share, at the baseline's mean
        floor = bernoulli_sd(mu0) if s.binary else s.ref_sd
        sd0 = max(spread, floor / np.sqrt(max(s.n, 1)))
        z = s.z_against(mu0, sd0, len(base))
    else:
        z, sd0 = s.z, s.ref_sd / np.sqrt(max(s.n, 1))
    if s.detect_shift > 0:  # CUSUM reference value: half the z-shift of the drop of interest
        limits = tuned_limits(limits, round(float(min(3.0, max(0.5, 0.5 * s.detect_shift / sd0))), 2))
    cs = ChartState(**state["charts"].get(s.name, {}))
    if charted:
        v = update(cs, z, limits, at=state.get("window_end"))
        if v.alarm:  # the charts restart after a signal; a lasting shift signals again at once
            reset(cs)
        state["charts"][s.name] = asdict(cs)
    else:  # the window was charted already: read the verdict, change nothing
        v = update(ChartState(**asdict(cs)), z, limits)
    rules = [*v.rules, *relative]
    return Verdict(s.name, s.kind, s.value, reference, s.n, round(z, 3), rules, "breach" if rules else "ok")


def _rule_24h_verdict(
    store: ObjectStore, cfg: PlantConfig, log: Any, where: str, name: str, version: int, end: datetime, ref: Reference
) -> Verdict:
    from andon.labeling.labels import ReviewLog

    day = log.read(
        end - timedelta(hours=24), end, where=where, columns="part_id, predicted_class", params=[name, version]
    )
    labels = ReviewLog(store, cfg.id).read(end - timedelta(hours=24), end + timedelta(days=1))
    joined = day.merge(labels[["part_id", "label"]], on="part_id") if not day.empty else day
    acc = float((joined["predicted_class"] == joined["label"]).mean()) if len(joined) else float("nan")
    hit = rule_24h(acc, len(joined), ref)
    # shown next to the charts for comparison, never an alert: on stable data it cries wolf about
    # once a day (benchmarks/drift_detection.py)
    return Verdict("accuracy_24h_rule", "performance", acc, ref.accuracy, len(joined), 0.0,
                   ["24h-1sd"] if hit else [], "flagged" if hit else "ok")  # fmt: skip


def _alerts(
    store: ObjectStore,
    cfg: PlantConfig,
    state: dict[str, Any],
    result: MonitorResult,
    ref: Reference,
    emit: Emit | None,
    clear_after: int = 3,
) -> list[dict[str, Any]]:
    opened = []
    now = datetime.now(UTC).isoformat()
    calm: dict[str, int] = state.setdefault("calm", {})  # charted in-control windows since the alert's series fired
    for v in result.verdicts:
        active = state["active"].get(v.series)
        if v.status == "breach":
            calm.pop(v.series, None)
            if active:
                v.status = "active"  # hysteresis: alerted already, not cleared since
                continue
            record = _open_alert(cfg, result, v, ref)
            state["active"][v.series] = record["id"]
            opened.append(record)
        elif v.status in ("ok", "baseline") and active:
            if not result.charted:  # a window charted before (a rerun, an hourly over 5-min windows) proves nothing
                v.status = "active"
                continue
            calm[v.series] = calm.get(v.series, 0) + 1
            if calm[v.series] < clear_after:
                v.status = "recovering"
                continue
            calm.pop(v.series)
            state["active"].pop(v.series)
            v.status = "cleared"
            key = join_key("alerts", cfg.id, f"{active}.json")
            try:
                rec = json.loads(store.get(key))
                rec["cleared_at"] = now
                store.put(key, json.dumps(rec, indent=1).encode(), "application/json")
            except ObjectNotFoundError:
                pass
    # one excursion breaches many series at once: only the most severe alert that clears the retrain
    # threshold starts a retrain (its event carries andon.significant), so one cause is one retrain run
    rank = {"medium": 1, "high": 2, "critical": 3}
    lead = max(
        (r for r in opened if r["payload"]["retrain"]), key=lambda r: rank[r["payload"]["severity"]], default=None
    )
    for record in opened:
        record["payload"]["starts_retrain"] = record is lead  # every alert says whether it did
        key = join_key("alerts", cfg.id, f"{record['id']}.json")
        store.put(key, json.dumps(record, indent=1).encode(), "application/json")
        if emit:
            emit(record["event"], record["payload"], record["id"])
    return opened


def _open_alert(cfg: PlantConfig, result: MonitorResult, v: Verdict, ref: Reference) -> dict[str, Any]:
    performance = v.kind == "performance"
    event = PERFORMANCE_DEGRADED if performance else DRIFT_DETECTED
    accuracy_like = ("accuracy", "estimated_accuracy", "accuracy_24h_rule")
    drop_pct = (v.reference - v.value) * 100 if v.series in accuracy_like else None  # from what was charted against
    rise_pct = (v.value - v.reference) * 100 if v.series in ("escape_rate", "overkill_rate") else None
    if performance:
        severity = "critical" if max(drop_pct or 0, rise_pct or 0) >= 10 else "high"
        retrain = (drop_pct is not None and drop_pct >= cfg.retrain.accuracy_drop_pct) or (
            v.series == "escape_rate" and rise_pct is not None and rise_pct >= cfg.retrain.escape_rise_pct
        )
    else:  # broad drift (Evidently says most features moved, or several charted features did) is high
        broad = (result.drift_share or 0) >= 0.5 or sum(
            x.kind == "data" and x.status == "breach" for x in result.verdicts
        ) >= 3
        severity = "high" if broad else "medium"
        retrain = severity == "high" or cfg.retrain.drift_severity == "medium"
    aid = f"{result.end:%Y%m%dT%H%M%S}-{v.series}-{uuid.uuid4().hex[:6]}"
    payload = {
        "plant": cfg.id,
        "model": result.model,
        "version": result.version,
        "series": v.series,
        "kind": v.kind,
        "value": v.value,
        "reference": v.reference,
        "shift": v.value - v.reference,
        "z": v.z,
        "rules": v.rules,
        "window": [result.start.isoformat(), result.end.isoformat()],
        "n": v.n,
        "severity": severity,
        "accuracy_drop_pct": None if drop_pct is None else round(drop_pct, 2),
        "rate_rise_pct": None if rise_pct is None else round(rise_pct, 2),
        "report_key": result.drift_report_key,
        "retrain": retrain,  # clears the plant's retrain threshold: the event carries andon.significant
    }
    record = {
        "id": aid,
        "event": event,
        "status": "open",
        "opened_at": datetime.now(UTC).isoformat(),
        "acked_by": None,
        "acked_at": None,
        "cleared_at": None,
        "payload": payload,
    }
    return record  # written by _alerts, once the run's lead alert is known


def list_alerts(store: ObjectStore, plant: str, status: str | None = None) -> list[dict[str, Any]]:
    out = []
    for obj in store.list(join_key("alerts", plant) + "/"):
        rec = json.loads(store.get(obj.key))
        if status is None or rec["status"] == status:
            out.append(rec)
    return sorted(out, key=lambda r: r["opened_at"])


def ack_alert(store: ObjectStore, plant: str, alert_id: str, who: str, note: str = "") -> dict[str, Any]:
    """A person took the alert (``acked``): who, when, what they said."""
    return _update_alert(store, plant, alert_id, "acked", who, note)


def resolve_alert(store: ObjectStore, plant: str, alert_id: str, who: str, note: str = "") -> dict[str, Any]:
    """The cause is dealt with (``resolved``); the record keeps who acknowledged it before."""
    return _update_alert(store, plant, alert_id, "resolved", who, note)


def _update_alert(store: ObjectStore, plant: str, alert_id: str, status: str, who: str, note: str) -> dict[str, Any]:
    key = join_key("alerts", plant, f"{alert_id}.json")
    try:
        rec = json.loads(store.get(key))
    except (ObjectNotFoundError, ValueError):
        raise DataError(f"no alert {alert_id[:80]!r} for {plant} (see `andon alerts list --plant {plant}`)") from None
    now = datetime.now(UTC).isoformat()
    verb = "acked" if status == "acked" else "resolved"
    rec.update({"status": status, f"{verb}_by": who, f"{verb}_at": now, "note": note})
    rec.setdefault("history", []).append({"status": status, "by": who, "at": now, "note": note})
    store.put(key, json.dumps(rec, indent=1).encode(), "application/json")
    return rec
