"""Active learning and the label queue: people label only the parts that teach the model most.

After each scoring window ``queue_window`` picks up to ``labeling.per_window`` parts (within the
plant's ``labeling.daily_budget``): the most uncertain ones (smallest margin between the top two
classes), then, among a shortlist of ``labeling.shortlist`` x that many, a k-center greedy choice
on the logged embeddings, so the picks are uncertain *and* unlike each other (a burst of one odd
part does not fill the queue). Every reviewed part the model got wrong is queued too (reason
``wrong``), so it reaches the next dataset version.

The queue is append-only (``labeling/<plant>/queue/date=<d>/<time>-<uuid>.parquet``); a part's
status is derived, never overwritten: ``queued`` -> ``labeled`` (a review exists in
``labels/<plant>/``) -> ``used`` (``labeling/<plant>/used/<version>.json`` lists it: the version
trained on it). Label Studio round trip: ``export_tasks`` writes its JSON task format (image URL,
the model's prediction as pre-annotation), ``import_annotations`` reads its export back into the
review log.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from andon.config import PlantConfig
from andon.errors import DataError
from andon.storage import ObjectStore, join_key

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

QUEUED, LABELED, USED = "queued", "labeled", "used"
UNCERTAIN, WRONG = "uncertain", "wrong"
QUEUE_COLUMNS = ["part_id", "object_key", "line", "reason", "score", "predicted_class", "confidence", "model",
                 "queued_at"]  # fmt: skip


# ------------------------------------------------------------------ selection


def k_center(points: np.ndarray, k: int, first: int = 0) -> list[int]:
    """Greedy k-center (farthest-point) selection: indices of ``k`` rows of ``points``."""
    import numpy as np

    n = len(points)
    if k >= n:
        return list(range(n))
    chosen = [first]
    dist = np.linalg.norm(points - points[first], axis=1)
    while len(chosen) < k:
        nxt = int(dist.argmax())
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(points - points[nxt], axis=1))
    return chosen


def select(margins: np.ndarray, embeddings: np.ndarray | None, n: int, shortlist: int = 5) -> list[int]:
    """Uncertainty + diversity: the ``shortlist * n`` smallest margins, then k-center on their
    embeddings (starting from the most uncertain). Without embeddings: the ``n`` smallest margins."""
    import numpy as np

    if n <= 0 or len(margins) == 0:
        return []
    order = np.argsort(margins, kind="stable")
    if embeddings is None or len(embeddings) == 0:
        return [int(i) for i in order[:n]]
    pool = order[: max(n, shortlist * n)]
    picked = k_center(np.asarray(embeddings, dtype=np.float64)[pool], n)
    return [int(pool[i]) for i in picked]


# ------------------------------------------------------------------ the queue


class LabelQueue:
    def __init__(self, store: ObjectStore, plant: str) -> None:
        self.store = store
        self.plant = plant

    def append(self, rows: Iterable[dict[str, Any]]) -> str | None:
        import pandas as pd

        frame = pd.DataFrame(list(rows), columns=QUEUE_COLUMNS)
        if frame.empty:
            return None
        frame["queued_at"] = pd.to_datetime(frame["queued_at"], utc=True)
        first = frame["queued_at"].min()
        name = f"{first:%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}.parquet"
        key = join_key("labeling", self.plant, "queue", f"date={first:%Y-%m-%d}", name)
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False)
        self.store.put(key, buf.getvalue(), "application/vnd.apache.parquet")
        return key

    def read(self, days: int = 30, now: datetime | None = None) -> pd.DataFrame:
        """Queued parts of the last ``days`` days (first queueing of a part wins)."""
        import pandas as pd

        now = now or datetime.now(UTC)
        frames = []
        for d in range(days, -1, -1):
            day = (now - timedelta(days=d)).date()
            for obj in self.store.list(join_key("labeling", self.plant, "queue", f"date={day:%Y-%m-%d}") + "/"):
                frames.append(pd.read_parquet(io.BytesIO(self.store.get(obj.key))))
        if not frames:
            return pd.DataFrame(columns=QUEUE_COLUMNS)
        out = pd.concat(frames, ignore_index=True).sort_values("queued_at")
        return out.drop_duplicates("part_id", keep="first").reset_index(drop=True)

    def mark_used(self, part_ids: list[str], model: str, version: int) -> str:
        key = join_key("labeling", self.plant, "used", f"{model}-v{version}.json")
        self.store.put(key, json.dumps({"model": model, "version": version, "part_ids": sorted(part_ids)}).encode())
        return key

    def used(self) -> dict[str, str]:
        """part id -> the version that was trained on it."""
        out: dict[str, str] = {}
        for obj in self.store.list(join_key("labeling", self.plant, "used") + "/"):
            doc = json.loads(self.store.get(obj.key))
            for pid in doc["part_ids"]:
                out.setdefault(pid, f"{doc['model']} v{doc['version']}")
        return out

    def status(self, days: int = 30, now: datetime | None = None) -> pd.DataFrame:
        """The queue with ``status`` (queued / labeled / used), ``label`` and ``used_in``."""
        from andon.labeling.labels import ReviewLog

        now = now or datetime.now(UTC)
        queue = self.read(days, now)
        labels = ReviewLog(self.store, self.plant).read(now - timedelta(days=days + 7), now + timedelta(seconds=1))
        out = queue.merge(labels[["part_id", "label", "reviewer"]], on="part_id", how="left")
        used = self.used()
        out["used_in"] = out["part_id"].map(used)
        out["status"] = QUEUED
        out.loc[out["label"].notna(), "status"] = LABELED
        out.loc[out["used_in"].notna(), "status"] = USED
        return out


def queued_today(queue: pd.DataFrame, now: datetime) -> int:
    if queue.empty:
        return 0
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return int(((queue["queued_at"] >= start) & (queue["reason"] == UNCERTAIN)).sum())


def queue_window(store: ObjectStore, cfg: PlantConfig, start: datetime, end: datetime) -> dict[str, int]:
    """Queue the window's most informative parts (within the daily budget) and every reviewed
    part the model got wrong. Returns the counts queued per reason."""
    import numpy as np

    from andon.labeling.labels import ReviewLog
    from andon.scoring.predlog import PredictionLog

    spec = cfg.labeling
    q = LabelQueue(store, cfg.id)
    queue = q.read(days=7, now=end)
    already = set(queue["part_id"])
    cols = "part_id, object_key, line, model_name, model_version, predicted_class, probabilities, margin"
    where = "error is null and object_key is not null"
    rows = PredictionLog(store, cfg.id).read(start, end, where=where, columns=cols + ", embedding")
    rows = rows[~rows["part_id"].isin(already)].drop_duplicates("part_id", keep="last").reset_index(drop=True)
    budget = max(0, spec.daily_budget - queued_today(queue, end))
    n = min(spec.per_window, budget, len(rows))
    picks: list[dict[str, Any]] = []
    if n:
        emb = np.stack(rows["embedding"].to_numpy()) if rows["embedding"].notna().all() else None
        for i in select(rows["margin"].to_numpy(dtype=float), emb, n, spec.shortlist):
            r = rows.iloc[i]
            picks.append(_queue_row(r, UNCERTAIN, float(r["margin"]), end))
    # every reviewed part the model got wrong (the reviews of this window)
    labels = ReviewLog(store, cfg.id).read(start, end + timedelta(seconds=1))
    wrong: list[dict[str, Any]] = []
    if not labels.empty:
        lookback = start - timedelta(days=7)
        scored = PredictionLog(store, cfg.id).read(lookback, end, where="error is null", columns=cols)
        scored = scored.drop_duplicates("part_id", keep="last")
        joined = labels[["part_id", "label"]].merge(scored, on="part_id")
        taken = already | {p["part_id"] for p in picks}
        for r in joined[joined["label"] != joined["predicted_class"]].itertuples():
            if r.part_id not in taken:
                wrong.append(_queue_row(r._asdict(), WRONG, float(r.margin or 0.0), end))
    q.append([*picks, *wrong])
    return {UNCERTAIN: len(picks), WRONG: len(wrong)}


def _queue_row(r: Any, reason: str, score: float, now: datetime) -> dict[str, Any]:
    probs = list(r["probabilities"]) if r["probabilities"] is not None else []
    return {
        "part_id": r["part_id"],
        "object_key": r["object_key"],
        "line": r["line"],
        "reason": reason,
        "score": round(score, 5),
        "predicted_class": r["predicted_class"],
        "confidence": round(float(max(probs)), 5) if len(probs) else None,
        "model": f"{r['model_name']} v{r['model_version']}",
        "queued_at": now,
    }


# ------------------------------------------------------------------ Label Studio


def _choice(label: str) -> dict[str, Any]:
    return {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}}


def export_tasks(store: ObjectStore, cfg: PlantConfig, queue: pd.DataFrame) -> list[dict[str, Any]]:
    """Label Studio tasks (JSON import format) for the ``queued`` rows: the image URL, the part,
    and the model's prediction as a pre-annotation (``choices`` named ``label`` on ``image``).
    Image URLs are links through ``andon ui`` (``ANDON_UI_URL``), signed and valid for a week, so
    Label Studio loads them over HTTP from the file store and S3 alike."""
    from andon.web.links import object_url

    tasks = []
    for r in queue[queue["status"] == QUEUED].itertuples():
        url = object_url(r.object_key, signed_ttl_s=7 * 24 * 3600)
        known = r.confidence is not None and r.confidence == r.confidence  # not None, not NaN (JSON has no NaN)
        prediction = {"model_version": r.model, "score": float(r.confidence) if known else None,
                      "result": [_choice(r.predicted_class)]}  # fmt: skip
        tasks.append({
            "data": {"image": url, "part_id": r.part_id, "plant": cfg.id, "line": r.line, "reason": r.reason},
            "predictions": [prediction],
        })  # fmt: skip
    return tasks


LABEL_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <Choices name="label" toName="image" choice="single">
{choices}
  </Choices>
</View>"""


def label_config(cfg: PlantConfig) -> str:
    """The Label Studio labeling config that matches the exported tasks."""
    return LABEL_CONFIG.format(choices="\n".join(f'    <Choice value="{c}"/>' for c in cfg.recipe.classes))


def import_annotations(
    store: ObjectStore, cfg: PlantConfig, tasks: Any, reviewer: str = "label-studio"
) -> dict[str, Any]:
    """Reviews from a Label Studio JSON export. Tasks without a (non-cancelled) annotation are
    skipped and counted; a label outside the plant's classes, a task without ``data.part_id``
    or a part of another plant is an error that names the task (nothing is imported then)."""
    from andon.labeling.labels import ReviewLog

    if not isinstance(tasks, list):
        raise DataError("a Label Studio export is a JSON list of tasks")
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    skipped = 0
    for i, task in enumerate(tasks):
        try:
            skipped += _import_task(cfg, i, task, reviewer, rows, problems)
        except (AttributeError, TypeError, KeyError, ValueError) as exc:  # a task of the wrong shape
            problems.append(f"task {i}: not a Label Studio task ({type(exc).__name__}: {str(exc)[:100]})")
    if problems:
        raise DataError(f"{len(problems)} task(s) cannot be imported (nothing was): " + "; ".join(problems[:10]))
    keys = ReviewLog(store, cfg.id).append(rows)
    return {"imported": len(rows), "skipped": skipped, "keys": keys}


def _import_task(
    cfg: PlantConfig, i: int, task: Any, reviewer: str, rows: list[dict[str, Any]], problems: list[str]
) -> int:
    """One task into ``rows`` (or a problem naming it); returns 1 when it was skipped (no annotation)."""
    from andon.labeling.labels import parse_reviewed_at

    data = task.get("data", {}) if isinstance(task, dict) else {}
    pid = data.get("part_id")
    if not pid:
        problems.append(f"task {task.get('id', i) if isinstance(task, dict) else i}: no data.part_id")
        return 0
    if data.get("plant", cfg.id) != cfg.id:
        problems.append(f"task {task.get('id', i)}: part {pid} belongs to {data.get('plant')}, not {cfg.id}")
        return 0
    done = [a for a in task.get("annotations", []) if not a.get("was_cancelled") and a.get("result")]
    if not done:
        return 1
    latest = max(done, key=lambda a: str(a.get("updated_at") or a.get("created_at") or ""))
    choices = [c for res in latest["result"] for c in res.get("value", {}).get("choices", [])]
    if len(choices) != 1 or choices[0] not in cfg.recipe.classes:
        problems.append(f"task {task.get('id', i)} ({pid}): label {choices} is not one of {list(cfg.recipe.classes)}")
        return 0
    when = latest.get("updated_at") or latest.get("created_at") or datetime.now(UTC).isoformat()
    try:
        parse_reviewed_at(when)
    except DataError as exc:
        problems.append(f"task {task.get('id', i)} ({pid}): {exc}")
        return 0
    who = latest.get("completed_by")
    by = f"{reviewer}:{who}" if who is not None else reviewer
    rows.append({"part_id": pid, "label": choices[0], "reviewed_at": when, "reviewer": by, "line": data.get("line")})
    return 0
