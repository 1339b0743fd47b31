"""What the floor's pages show, gathered from the same records the CLI and the flows use: the
label queue and review log, the alert records, the prediction log, the registry, the reports.

Plain Python (no web framework here); ``andon/web/app.py`` renders it."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from andon.storage import join_key

if TYPE_CHECKING:
    import pandas as pd

    from andon.config import PlantConfig
    from andon.storage import ObjectStore

QUEUE_TTL_S = 30.0  # the queue is re-read from the store at most this often; a review shows at once
PAGE_SIZE = 50
UNSURE = "unsure"


def object_allowed(plant: str, key: str) -> bool:
    """Whether ``key`` belongs to ``plant`` (its images and batches, its reports, explanations),
    or is the cross-plant governance report every plant may read."""
    from andon.web.links import GOVERNANCE_REPORTS, plant_of_key

    return ".." not in key.split("/") and (plant_of_key(key) == plant or key.startswith(GOVERNANCE_REPORTS))


@dataclass
class QueueView:
    """One plant's label queue as the review page sees it, cached for ``QUEUE_TTL_S``."""

    store: ObjectStore
    cfg: PlantConfig
    frame: pd.DataFrame | None = None
    loaded: float = 0.0
    done: set[str] = field(default_factory=set)  # labeled (or marked unsure) since the frame was read
    unsure: dict[str, dict[str, Any]] = field(default_factory=dict)
    overlays: dict[str, str] = field(default_factory=dict)  # part id -> its saliency / anomaly map
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _refresh(self) -> None:
        from andon.labeling.queue import QUEUED, LabelQueue

        if self.frame is not None and time.monotonic() - self.loaded < QUEUE_TTL_S:
            return
        status = LabelQueue(self.store, self.cfg.id).status()
        self.frame = status[status["status"] == QUEUED].reset_index(drop=True)
        self.unsure = {}
        for obj in self.store.list(join_key("labeling", self.cfg.id, UNSURE) + "/"):
            rec = json.loads(self.store.get(obj.key))
            self.unsure[rec["part_id"]] = rec
        # explanations/<plant>/<date>/<part>/<model>-v<version>-<scored-at>.png: the latest per part
        self.overlays = {}
        for obj in sorted(self.store.list(join_key("explanations", self.cfg.id) + "/"), key=lambda o: o.key):
            parts = obj.key.split("/")
            if len(parts) >= 5:
                self.overlays[parts[3]] = obj.key
        self.done = set()
        self.loaded = time.monotonic()

    def counts(self) -> dict[str, int]:
        with self.lock:
            self._refresh()
            assert self.frame is not None
            left = [p for p in self.frame["part_id"] if p not in self.done]
            return {"queued": len(left), "unsure": sum(1 for p in left if p in self.unsure)}

    def next(self, skipped: set[str]) -> dict[str, Any] | None:
        """The next part to review: never one this reviewer skipped; parts someone was unsure of last."""
        with self.lock:
            self._refresh()
            assert self.frame is not None
            later = None
            for row in self.frame.itertuples(index=False):
                if row.part_id in self.done or row.part_id in skipped:
                    continue
                if row.part_id in self.unsure:
                    later = later or row
                    continue
                return self._row(row)
            return self._row(later) if later is not None else None

    def _row(self, row: Any) -> dict[str, Any]:
        out = row._asdict()
        out["confidence"] = float(out["confidence"]) if out["confidence"] == out["confidence"] else None
        out["unsure_by"] = self.unsure.get(row.part_id, {}).get("who")
        out["overlay_key"] = self.overlays.get(row.part_id)
        return out

    def find(self, part_id: str) -> dict[str, Any] | None:
        with self.lock:
            self._refresh()
            assert self.frame is not None
            hit = self.frame[self.frame["part_id"] == part_id]
            return None if hit.empty else hit.iloc[0].to_dict()

    def record(self, part_id: str, label: str, who: str) -> dict[str, Any]:
        """A reviewer's decision: a class (into the review log, which feeds the next dataset
        version and the retrain path) or ``unsure`` (kept for another reviewer)."""
        from andon.errors import DataError
        from andon.labeling.labels import ReviewLog

        row = self.find(part_id)
        if row is None:
            raise DataError(f"part {part_id[:80]!r} is not in {self.cfg.id}'s queue (reviewed already?)")
        now = datetime.now(UTC)
        if label == UNSURE:
            key = join_key("labeling", self.cfg.id, UNSURE, hashlib.sha256(part_id.encode()).hexdigest()[:32] + ".json")
            rec = {"part_id": part_id, "who": who, "at": now.isoformat()}
            self.store.put(key, json.dumps(rec).encode(), "application/json")
            with self.lock:
                self.unsure[part_id] = rec
            return {"part_id": part_id, "label": UNSURE, "wrong": False}
        if label not in self.cfg.recipe.classes:
            raise DataError(f"{label[:40]!r} is not a class of {self.cfg.id}: {', '.join(self.cfg.recipe.classes)}")
        ReviewLog(self.store, self.cfg.id).append(
            [{"part_id": part_id, "label": label, "reviewed_at": now, "reviewer": who, "line": row.get("line")}]
        )
        with self.lock:
            self.done.add(part_id)
        predicted = row.get("predicted_class")
        return {"part_id": part_id, "label": label, "predicted": predicted, "wrong": label != predicted}


def alerts(store: ObjectStore, plant: str) -> list[dict[str, Any]]:
    """Every alert record, open and acknowledged first, newest first within each."""
    from andon.monitoring.monitor import list_alerts

    order = {"open": 0, "acked": 1, "resolved": 2}
    newest = sorted(list_alerts(store, plant), key=lambda r: r["opened_at"], reverse=True)
    return sorted(newest, key=lambda r: order.get(r["status"], 3))  # stable: newest first within each


def latest(store: ObjectStore, prefix: str, n: int = 1) -> list[str]:
    """The last ``n`` keys under ``prefix`` (report names sort by time)."""
    return sorted(obj.key for obj in store.list(prefix))[-n:][::-1]


def dashboard(store: ObjectStore, cfg: PlantConfig) -> dict[str, Any]:
    """A plant at a glance: champion and its versions, open alerts, the latest control charts and
    drift reports, the monitoring state. The registry may be unreachable: the page says so."""
    from andon.lifecycle.registry import list_versions, model_name

    name = model_name(cfg.id, cfg.recipe.task)
    out: dict[str, Any] = {"model": name, "versions": [], "registry_error": None}
    try:
        for v in sorted(list_versions(name), key=lambda v: v.version, reverse=True)[:12]:
            m = v.metrics
            out["versions"].append(
                {
                    "version": v.version,
                    "aliases": v.aliases,
                    "created": v.created,
                    "escape": m.get("test_escape_rate"),
                    "escape_upper": m.get("test_escape_rate_upper"),
                    "overkill": m.get("test_overkill_rate"),
                    "overkill_upper": m.get("test_overkill_rate_upper"),
                    "defects": m.get("test_defects"),
                    # why it serves (or served): the registry's move records (andon.lifecycle.registry.record_move)
                    "reason": v.tags.get("rollback.reason") or v.tags.get("promotion.reason") or "",
                    "forced": v.tags.get("promotion.forced") == "true",
                    "data": v.tags.get("data.manifest_sha256", "")[:12],
                    "commit": v.tags.get("code.commit", "")[:10],
                    "run_id": v.run_id,
                }
            )
    except Exception as exc:  # the page is still useful without the registry
        out["registry_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
    out["champion"] = next((v for v in out["versions"] if "champion" in v["aliases"]), None)
    all_alerts = alerts(store, cfg.id)
    out["open_alerts"] = [a for a in all_alerts if a["status"] == "open"]
    out["charts"] = latest(store, join_key("reports", cfg.id, "charts") + "/", 1)
    out["drift_reports"] = latest(store, join_key("reports", cfg.id, "drift") + "/", 5)
    out["audit_reports"] = latest(store, join_key("reports", cfg.id, "audit") + "/", 3)
    try:
        out["monitoring"] = json.loads(store.get(join_key("monitoring", cfg.id, "state.json")))
    except Exception:
        out["monitoring"] = None
    from andon.web.svg import control_chart

    charts = (out["monitoring"] or {}).get("charts", {})
    out["control_charts"] = [svg for name in sorted(charts) if (svg := control_chart(name, charts[name]))]
    return out


def parts_page(
    store: ObjectStore, cfg: PlantConfig, page: int, days: int = 30, now: datetime | None = None
) -> dict[str, Any]:
    """The scored parts of the last ``days`` days, newest first, one page of ``PAGE_SIZE``."""
    from andon.scoring.predlog import PredictionLog

    end = now or datetime.now(UTC)
    start = end - timedelta(days=days)
    cols = "part_id, line, scored_at, predicted_class, defect_score, model_version"
    rel = PredictionLog(store, cfg.id).query(start, end, columns=cols)
    table = rel.to_arrow_table()  # ordered by scored_at: the newest page is the tail, reversed
    total = table.num_rows
    hi = max(total - page * PAGE_SIZE, 0)
    rows = table.slice(max(hi - PAGE_SIZE, 0), hi - max(hi - PAGE_SIZE, 0)).to_pylist()[::-1]
    return {"rows": rows, "total": total, "page": page, "pages": max(1, -(-total // PAGE_SIZE))}


def part_record(store: ObjectStore, cfg: PlantConfig, part_id: str, days: int = 90) -> dict[str, Any]:
    """What ``andon explain`` prints for one part: its logged record, lineage, overlay location."""
    from andon.explain.audit import find_part

    end = datetime.now(UTC) + timedelta(minutes=1)
    rec = find_part(store, cfg, part_id, end - timedelta(days=days), end)
    rec["overlay_key"] = rec.get("explanation_key")
    return rec
