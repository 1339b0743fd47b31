"""Active learning and the label queue on a local store: selection, budget, the reviewed-wrong
parts, statuses, the Label Studio round trip and the terminal review."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from andon.config import load_plant
from andon.errors import DataError
from andon.labeling.labels import ReviewLog
from andon.labeling.queue import (
    LABELED,
    QUEUED,
    USED,
    LabelQueue,
    export_tasks,
    import_annotations,
    k_center,
    queue_window,
    select,
)
from andon.scoring.predlog import PredictionLog
from andon.storage import LocalObjectStore

T0 = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)


def test_k_center_spreads_and_select_prefers_uncertain_and_different() -> None:
    rng = np.random.default_rng(0)
    clusters = np.concatenate([rng.normal(c, 0.01, (50, 2)) for c in ((0, 0), (5, 5), (0, 5), (5, 0))])
    picked = k_center(clusters, 4)
    assert sorted({i // 50 for i in picked}) == [0, 1, 2, 3]  # one per cluster
    margins = np.linspace(0.01, 0.99, 200)  # the first cluster is the most uncertain ...
    only_uncertain = select(margins, None, 4)
    assert only_uncertain == [0, 1, 2, 3]
    both = select(margins, clusters, 4, shortlist=50)  # ... but 4 picks from it teach less than 4 kinds
    assert both[0] == 0 and len({i // 50 for i in both}) == 4
    assert select(margins, clusters, 0) == [] and select(np.array([]), None, 3) == []


def _scored(log: PredictionLog, n: int, at: datetime, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        p = float(rng.uniform(0.5, 1.0))
        cls = "ok" if i % 2 else "defect"
        rows.append({
            "part_id": f"part-{seed}-{i:04d}", "line": "line-1", "scored_at": at + timedelta(seconds=i),
            "model_name": "plant-a.surface-defects", "model_version": 3, "model_alias": "champion",
            "predicted_class": cls, "probabilities": [p, 1 - p], "margin": 2 * p - 1,
            "embedding": rng.normal(size=8).tolist(), "object_key": f"plant-a/line-1/raw/x/images/{i}.png",
        })  # fmt: skip
    log.append(rows)
    return rows


def test_queue_window_budget_wrong_predictions_and_statuses(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    cfg = load_plant("plant-a")
    cfg = cfg.model_copy(update={"labeling": cfg.labeling.model_copy(update={"per_window": 10, "daily_budget": 25})})
    log = PredictionLog(store, cfg.id)
    rows = _scored(log, 200, T0)
    # a person reviewed 6 parts: 3 the model got wrong
    ReviewLog(store, cfg.id).append(
        {"part_id": r["part_id"], "label": ("ok" if r["predicted_class"] == "defect" else "defect") if j < 3
         else r["predicted_class"], "reviewed_at": T0 + timedelta(minutes=1), "reviewer": "qa"}
        for j, r in enumerate(rows[100:106])
    )  # fmt: skip
    first = queue_window(store, cfg, T0, T0 + timedelta(minutes=5))
    assert first == {"uncertain": 10, "wrong": 3}
    queue = LabelQueue(store, cfg.id).read(now=T0 + timedelta(minutes=5))
    uncertain = queue[queue.reason == "uncertain"]
    assert uncertain.score.max() <= np.quantile([r["margin"] for r in rows], 0.3)  # from the uncertain end
    # the same window again: nothing twice; later windows until the daily budget is spent
    assert queue_window(store, cfg, T0, T0 + timedelta(minutes=5)) == {"uncertain": 10, "wrong": 0}
    _scored(log, 50, T0 + timedelta(minutes=10), seed=1)
    assert queue_window(store, cfg, T0 + timedelta(minutes=10), T0 + timedelta(minutes=15))["uncertain"] == 5
    assert queue_window(store, cfg, T0 + timedelta(minutes=10), T0 + timedelta(minutes=15))["uncertain"] == 0

    q = LabelQueue(store, cfg.id)
    status = q.status(now=T0 + timedelta(hours=1))
    reviewed = {r["part_id"] for r in rows[100:106]}
    assert len(status) == 28  # the wrong ones (and any uncertain pick someone reviewed anyway) carry their review
    assert set(status[status.status == LABELED].part_id) == reviewed & set(status.part_id)
    some = list(status[status.status == QUEUED].part_id[:2])
    ReviewLog(store, cfg.id).append(
        {"part_id": p, "label": "ok", "reviewed_at": T0 + timedelta(minutes=20)} for p in some
    )
    q.mark_used(some, "plant-a.surface-defects", 4)
    status = q.status(now=T0 + timedelta(hours=1)).set_index("part_id")
    assert (
        list(status.loc[some, "status"]) == [USED, USED]
        and status.loc[some[0], "used_in"] == "plant-a.surface-defects v4"
    )


def test_label_studio_round_trip(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    cfg = load_plant("plant-a")
    rows = _scored(PredictionLog(store, cfg.id), 30, T0)
    for r in rows:
        store.put(r["object_key"], b"png")
    queue_window(store, cfg, T0, T0 + timedelta(minutes=5))
    tasks = export_tasks(store, cfg, LabelQueue(store, cfg.id).status(now=T0 + timedelta(minutes=5)))
    from andon.settings import get_settings

    # the images go through `andon ui` as signed links (Label Studio cannot open file://)
    assert len(tasks) == 20 and tasks[0]["data"]["image"].startswith(get_settings().ui_url + "/o/")
    pre = tasks[0]["predictions"][0]
    assert pre["result"][0]["value"]["choices"][0] in cfg.recipe.classes and pre["model_version"].endswith("v3")

    # Label Studio's export: annotations added, one task skipped, one cancelled
    export = json.loads(json.dumps(tasks))
    for i, t in enumerate(export):
        t["id"] = i + 1
        if i < 18:
            t["annotations"] = [{"result": [{"value": {"choices": ["defect"]}, "from_name": "label", "to_name": "image",
                                             "type": "choices"}], "completed_by": 7,
                                 "created_at": "2026-11-26T10:00:00Z"}]  # fmt: skip
    export[19]["annotations"] = [{"result": [], "was_cancelled": True}]
    result = import_annotations(store, cfg, export)
    assert result["imported"] == 18 and result["skipped"] == 2
    reviews = ReviewLog(store, cfg.id).read(T0, T0 + timedelta(days=1))
    assert len(reviews) == 18 and set(reviews.label) == {"defect"} and set(reviews.reviewer) == {"label-studio:7"}

    bad = json.loads(json.dumps(export))
    bad[0]["annotations"][0]["result"][0]["value"]["choices"] = ["scratch"]
    bad[1]["data"]["plant"] = "plant-b"
    with pytest.raises(DataError, match=r"2 task\(s\) cannot be imported.*'scratch'.*belongs to plant-b"):
        import_annotations(store, cfg, bad)
    assert len(ReviewLog(store, cfg.id).read(T0, T0 + timedelta(days=1))) == 18  # nothing imported
    with pytest.raises(DataError, match="JSON list"):
        import_annotations(store, cfg, {"tasks": []})


def test_terminal_review(tmp_path: Path, andon_home: Path) -> None:
    from andon.cli.main import app
    from andon.storage import open_store

    store = open_store()
    cfg = load_plant("plant-a")
    now = datetime.now(UTC)
    _scored(PredictionLog(store, cfg.id), 30, now - timedelta(minutes=4))
    runner = CliRunner()
    res = runner.invoke(app, ["label", "queue", "--plant", "plant-a", "--window", "5m", "--at", now.isoformat()])
    assert res.exit_code == 0 and "queued 20 uncertain" in res.stdout
    # accept the guess, type a class, a first letter, a typo then a class, skip, quit
    res = runner.invoke(
        app, ["label", "review", "--plant", "plant-a", "--reviewer", "j.doe"], input="\nok\nd\nxx\nok\ns\nq\n"
    )
    assert res.exit_code == 0, res.output
    assert "labeled 4 parts" in res.stdout and "is not a class" in res.stdout
    reviews = ReviewLog(store, cfg.id).read(now - timedelta(hours=1), now + timedelta(hours=1))
    assert len(reviews) == 4 and set(reviews.reviewer) == {"j.doe"}
    res = runner.invoke(app, ["label", "list", "--plant", "plant-a", "--status", "labeled"], env={"COLUMNS": "220"})
    assert res.exit_code == 0 and "4 parts" in res.stdout
