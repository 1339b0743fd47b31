"""Retraining because something happened: the policy step, the data a retrain learns from, and
the sensor model's new-failure-type retrain. The retrain flow wires these (flows/retrain.py).

**Policy** (``decide``), checked in this order, every reason recorded:

1. duplicate event: the event id was handled before (an MES retry, or an event the gateway
   re-delivered after the Prefect server restarted and forgot the id). Always checked.
2. maintenance window: no retrain starts inside one of the plant's ``retrain.maintenance_windows``.
3. cooldown: a retrain of the same model started less than ``retrain.cooldown_hours`` ago.
4. below threshold: a product-mix shift under ``mes.product_mix_threshold``, an accuracy drop
   under ``retrain.accuracy_drop_pct``, drift below ``retrain.drift_severity`` (the deployment
   triggers already filter these; a manual or re-sent run is checked again).
5. too few new labels: drift, performance and scheduled retrains of the vision model need
   ``retrain.min_new_labels`` labels reviewed since the champion was trained (MES events do not:
   a new SKU must be learned whatever the label count).
6. sensor model: it retrains to learn a logged failure type (``details["failure_type"]``), which
   must be one the sensor table knows and the champion has not learned yet (manual runs too).

A manual run (``trigger="manual"``) skips 2-5. State: ``retraining/<plant>/state.json``;
every decision: ``retraining/<plant>/decisions/<time>-<trigger>.json``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from andon.config import DAYS, PlantConfig
from andon.errors import DataError, ObjectNotFoundError
from andon.events import (
    DRIFT_DETECTED,
    MES_PRODUCT_MIX_CHANGED,
    PERFORMANCE_DEGRADED,
)
from andon.lifecycle.registry import SENSOR_TASK
from andon.storage import ObjectStore, join_key

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)  # a flow run's Logs tab shows it (PREFECT_LOGGING_EXTRA_LOGGERS=andon)
MANUAL, SCHEDULE = "manual", "schedule"
VISION = "vision"
SEVERITY_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}
LABEL_HUNGRY = (DRIFT_DETECTED, PERFORMANCE_DEGRADED, SCHEDULE)


@dataclass
class PolicyDecision:
    plant: str
    task: str
    trigger: str
    event_id: str | None
    go: bool
    reasons: list[str]
    decided_at: str
    details: dict[str, Any] = field(default_factory=dict)
    new_labels: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def summary(self) -> str:
        return "retrain" if self.go else "skip: " + "; ".join(self.reasons)


def _state_key(plant: str) -> str:
    return join_key("retraining", plant, "state.json")


def load_state(store: ObjectStore, plant: str) -> dict[str, Any]:
    try:
        return dict(json.loads(store.get(_state_key(plant))))
    except ObjectNotFoundError:
        return {"events": {}, "last_started": {}}


def in_maintenance(cfg: PlantConfig, now: datetime) -> str | None:
    """The maintenance window ``now`` falls in (plant's local time), or None."""
    local = now.astimezone(ZoneInfo(cfg.timezone))
    day, hhmm = DAYS[local.weekday()], local.strftime("%H:%M")
    for w in cfg.retrain.maintenance_windows:
        if day in w.days and w.start <= hhmm < w.end:
            return f"{','.join(w.days)} {w.start}-{w.end} {cfg.timezone}"
    return None


def model_task(cfg: PlantConfig, task: str) -> str:
    """``vision`` -> the recipe's task (e.g. surface-defects); the sensor task stays."""
    if task == VISION:
        return cfg.recipe.task
    if task != SENSOR_TASK:
        raise DataError(f"task {task!r}: retrain {VISION} (the camera model) or {SENSOR_TASK} (the sensor model)")
    return task


def decide(
    store: ObjectStore,
    cfg: PlantConfig,
    task: str,
    trigger: str,
    event_id: str | None = None,
    details: dict[str, Any] | None = None,
    *,
    now: datetime | None = None,
) -> PolicyDecision:
    """Whether to retrain now, and why (not); every decision is recorded."""
    model_task(cfg, task)  # a clear error for a wrong task before anything else
    now = now or datetime.now(UTC)
    details = details or {}
    state = load_state(store, cfg.id)
    reasons: list[str] = []
    seen: dict[str, Any] | None = state["events"].get(event_id) if event_id else None
    # handled = its decision was a skip, or its retrain ran to the end; a run that failed (or was
    # cut off) leaves the event open, so a retry of that run (the UI's Retry, a redelivery) goes on
    handled = seen is not None and seen.get("status", "done") == "done"
    retry = seen is not None and not handled
    if seen is not None and handled:
        reasons.append(f"duplicate event {event_id}: handled at {seen['at']} ({seen['summary']})")
    new_labels: int | None = None
    if trigger != MANUAL and not handled:
        window = in_maintenance(cfg, now)
        if window:
            reasons.append(f"maintenance window ({window})")
        last = state["last_started"].get(task)
        cooldown = timedelta(hours=cfg.retrain.cooldown_hours)
        if last and now - datetime.fromisoformat(last) < cooldown and not retry:  # its own start is no cooldown
            reasons.append(
                f"cooldown: the last {task} retrain started at {last} (cooldown {cfg.retrain.cooldown_hours:g} h)"
            )
        reasons += _below_threshold(cfg, trigger, details)
        if task == VISION and trigger in LABEL_HUNGRY:
            new_labels = labels_since_champion(store, cfg, now)
            if new_labels < cfg.retrain.min_new_labels:
                reasons.append(
                    f"too few new labels: {new_labels} since the champion, need {cfg.retrain.min_new_labels}"
                )
    if task == SENSOR_TASK and not handled:  # the sensor model retrains to learn a logged failure type
        problem = _sensor_can_learn(cfg, str(details.get("failure_type", "")))
        if problem:
            reasons.append(problem)
    decision = PolicyDecision(
        cfg.id, task, trigger, event_id, not reasons, reasons, now.isoformat(), details, new_labels
    )
    _record(store, cfg.id, state, decision, now, count=not handled)
    logger.info("%s %s retrain on %s (event %s): %s", cfg.id, task, trigger, event_id or "-", decision.summary)
    return decision


def finish_event(store: ObjectStore, plant: str, event_id: str | None, summary: str) -> None:
    """The retrain an event started ran to the end: from now on the event is a duplicate."""
    if not event_id:
        return
    state = load_state(store, plant)
    entry = state["events"].get(event_id)
    if entry is None or entry.get("status", "done") == "done":
        return
    state["events"][event_id] = entry | {"status": "done", "summary": summary[:300]}
    store.put(_state_key(plant), json.dumps(state, indent=1).encode(), "application/json")


def _below_threshold(cfg: PlantConfig, trigger: str, details: dict[str, Any]) -> list[str]:
    if trigger == MES_PRODUCT_MIX_CHANGED:
        shift = float(details.get("shift", 0.0))
        if shift < cfg.mes.product_mix_threshold:
            return [f"product-mix shift {shift:.3f} is below the plant's threshold {cfg.mes.product_mix_threshold}"]
    if trigger == PERFORMANCE_DEGRADED:
        rise = details.get("rate_rise_pct") if details.get("series") == "escape_rate" else None
        if rise is not None:
            if float(rise) < cfg.retrain.escape_rise_pct:
                return [f"escape rate rise {rise} points is below the plant's {cfg.retrain.escape_rise_pct:g}"]
            return []
        drop = details.get("accuracy_drop_pct")
        if drop is None or float(drop) < cfg.retrain.accuracy_drop_pct:
            return [f"accuracy drop {drop} points is below the plant's {cfg.retrain.accuracy_drop_pct:g}"]
    if trigger == DRIFT_DETECTED:
        severity = str(details.get("severity", "low"))
        if SEVERITY_RANK.get(severity, 0) < SEVERITY_RANK[cfg.retrain.drift_severity]:
            return [f"drift severity {severity} is below the plant's {cfg.retrain.drift_severity}"]
    return []


def _sensor_can_learn(cfg: PlantConfig, failure_type: str) -> str | None:
    from andon.lifecycle.registry import CHAMPION, alias_version, model_name, version_info
    from andon.training.sensor import AI4I_TARGETS

    if failure_type not in AI4I_TARGETS:
        return f"failure type {failure_type!r} is not in the sensor table ({', '.join(AI4I_TARGETS)})"
    name = model_name(cfg.id, SENSOR_TASK)
    champion = alias_version(name, CHAMPION)
    if champion is None:
        return f"{name} has no champion to extend (train one with `andon train-sensor`)"
    learned = version_info(name, champion).tags.get("targets", "").split(",")
    if failure_type in learned:
        return f"{name} v{champion} already predicts {failure_type}"
    return None


def _record(
    store: ObjectStore, plant: str, state: dict[str, Any], d: PolicyDecision, now: datetime, count: bool
) -> None:
    doc = d.as_dict()
    key = join_key("retraining", plant, "decisions", f"{now:%Y%m%dT%H%M%S%f}-{d.trigger.replace('.', '-')}.json")
    store.put(key, json.dumps(doc, indent=1, default=str).encode(), "application/json")
    if d.event_id and count:  # a skip is final; a retrain is done when its run says so (finish_event)
        status = "started" if d.go else "done"
        state["events"][d.event_id] = {
            "at": d.decided_at,
            "summary": d.summary[:300],
            "trigger": d.trigger,
            "status": status,
        }
    if d.go:
        state["last_started"][d.task] = d.decided_at
    store.put(_state_key(plant), json.dumps(state, indent=1).encode(), "application/json")


# ------------------------------------------------------------------ the data a retrain learns from


def champion_created(cfg: PlantConfig, task: str = VISION) -> tuple[str, int, datetime] | None:
    """(model name, champion version, when it was registered), or None without a champion."""
    from andon.lifecycle.registry import CHAMPION, alias_version, model_name, version_info

    name = model_name(cfg.id, model_task(cfg, task))
    version = alias_version(name, CHAMPION)
    if version is None:
        return None
    created = version_info(name, version).created
    return name, version, datetime.fromisoformat(created) if created else datetime(1970, 1, 1, tzinfo=UTC)


def labels_since_champion(store: ObjectStore, cfg: PlantConfig, now: datetime) -> int:
    from andon.labeling.labels import ReviewLog

    champ = champion_created(cfg)
    since = champ[2] if champ else now - timedelta(days=365)
    return len(ReviewLog(store, cfg.id).read(since, now + timedelta(seconds=1)))


def labeled_items(store: ObjectStore, cfg: PlantConfig, since: datetime, until: datetime) -> pd.DataFrame:
    """Parts reviewed in ``[since, until)`` joined to the image they were scored from:
    part_id, label, object_key, sha256, line (parts whose image is unknown are left out)."""
    from andon.labeling.labels import ReviewLog
    from andon.scoring.predlog import PredictionLog

    labels = ReviewLog(store, cfg.id).read(since, until)
    if labels.empty:
        return labels.assign(object_key=[], sha256=[])
    # a part is scored before it is reviewed; look back a week for its prediction row
    rows = PredictionLog(store, cfg.id).read(
        since - timedelta(days=7), until, where="object_key is not null and error is null",
        columns="part_id, object_key, sha256, scored_at",
    )  # fmt: skip
    rows = rows.sort_values("scored_at").drop_duplicates("part_id", keep="last")
    joined = labels.merge(rows[["part_id", "object_key", "sha256"]], on="part_id", how="inner")
    return joined[joined["label"].isin(cfg.recipe.classes)].reset_index(drop=True)


@dataclass
class CollectedData:
    dataset_id: str
    base_dataset: str | None
    new_items: int
    rejected: list[dict[str, str]]  # {part_id, object_key, reason}: failed the gate, kept in a record
    counts: dict[str, int]
    part_ids: list[str] = field(default_factory=list)  # the reviewed parts it adds (label queue: "used")


def collect_dataset(store: ObjectStore, cfg: PlantConfig, now: datetime | None = None) -> CollectedData:
    """The champion's dataset plus every part reviewed since the champion was trained, each new
    image through the gate's per-image checks (a failure is recorded, never silently dropped),
    as a new content-addressed dataset version."""
    from andon.data.datasets import build_manifest, combine, save_manifest
    from andon.lifecycle.registry import version_info
    from andon.scoring.batch import check_image

    now = now or datetime.now(UTC)
    champ = champion_created(cfg)
    if champ is None:
        raise DataError(f"{cfg.id} has no champion: train and promote one before retraining")
    name, version, created = champ
    base = version_info(name, version).tags.get("data.manifest_sha256") or None
    items = labeled_items(store, cfg, created, now)
    objects, rejected = [], []
    for it in items.itertuples():
        try:
            data = store.get(it.object_key)
        except ObjectNotFoundError:
            rejected.append({"part_id": it.part_id, "object_key": it.object_key, "reason": "image no longer stored"})
            continue
        line = it.line if isinstance(it.line, str) and it.line in cfg.line_ids else cfg.line_ids[0]
        fields, problem = check_image(it.object_key, data, cfg, line)
        if problem:
            rejected.append({"part_id": it.part_id, "object_key": it.object_key, "reason": problem})
            continue
        objects.append({"key": it.object_key, "sha256": fields["sha256"], "label": it.label, "part_id": it.part_id})
    if rejected:
        key = join_key("retraining", cfg.id, "rejected", f"{now:%Y%m%dT%H%M%S}.json")
        store.put(key, json.dumps(rejected, indent=1).encode(), "application/json")
    ids = [base] if base else []
    if objects:
        labeled = build_manifest(cfg.id, objects, [f"reviews:{created.isoformat()}..{now.isoformat()}"])
        save_manifest(store, labeled)
        ids.append(labeled.id)
    if not ids:
        raise DataError(f"nothing to train {cfg.id} on: the champion has no dataset tag and no part was reviewed")
    merged = combine(store, cfg.id, ids)
    return CollectedData(merged.id, base, len(objects), rejected, merged.counts(), [o["part_id"] for o in objects])


# ------------------------------------------------------------------ the sensor model learns a failure type


@dataclass
class SensorRetrain:
    model: str
    version: int
    champion: int
    failure_type: str
    held_out: list[str]
    promoted: bool
    violations: list[str]
    metrics: dict[str, float]


def retrain_sensor(
    store: ObjectStore, cfg: PlantConfig, failure_type: str, *, epochs: int = 40, max_f1_drop: float = 0.05
) -> SensorRetrain:
    """Retrain the sensor champion on its own table with ``failure_type`` no longer held out;
    the new version becomes champion when it detects the new type at all (test recall > 0) and
    its any-failure F1 is at most ``max_f1_drop`` below the champion's."""
    from andon.lifecycle.registry import (
        CHAMPION,
        alias_version,
        model_name,
        move_champion,
        record_move,
        version_info,
    )
    from andon.training.sensor import train_sensor

    name = model_name(cfg.id, SENSOR_TASK)
    champion = alias_version(name, CHAMPION)
    if champion is None:
        raise DataError(f"{name} has no champion to extend")
    info = version_info(name, champion)
    manifest_id = info.tags.get("data.manifest_sha256")
    if not manifest_id:
        raise DataError(f"{name} v{champion} has no data.manifest_sha256 tag: cannot find its table")
    held = [t for t in info.tags.get("held_out", "").split(",") if t]
    new_hold = [t for t in held if t != failure_type]
    out = train_sensor(store, cfg, manifest_id, hold_out=tuple(new_hold), epochs=epochs)
    assert out.version is not None
    m = out.metrics
    violations = []
    if m.get(f"{failure_type}_recall", 0.0) <= 0:
        violations.append(f"v{out.version} detects no {failure_type} failure in the test split (recall 0)")
    old_f1 = info.metrics.get("test_failure_f1")
    if old_f1 is not None and m["failure_f1"] < old_f1 - max_f1_drop:
        violations.append(
            f"failure F1 {m['failure_f1']:.3f} is more than {max_f1_drop} below v{champion}'s {old_f1:.3f}"
        )
    if not violations:
        move_champion(name, out.version, expect=champion)
        record_move(name, out.version, "promotion", f"learned failure type {failure_type} (mes.failure_type.logged)")
    else:
        record_move(name, out.version, "promotion_refused", "; ".join(violations))
    return SensorRetrain(name, out.version, champion, failure_type, new_hold, not violations, violations, m)
