"""Catching defects: escape and overkill at each model's operating point, on parts it never saw.

Every model here is trained through Andon's own path (``train_plant``: the recipe, the checkpoint
chosen on the validation split by the overkill at the plant's escape target, the operating point
chosen on validation) and judged on an independent test set by ``evaluate_model``, the gate's
own evaluation. Figures, one JSON object per line:

- ``casting``: plant-a's recipe on the whole casting train folder, the untouched test folder
  (targets: escape <= 0.5 %, overkill <= 1 %), with the exact upper bounds its defect count allows;
- ``synthetic``: plant-b and plant-c, 1,500 parts at the plants' own defect rate (5 % / 4 %), and a
  curated training set enriched to 30 % defects; judged on 3,000 fresh parts with 20 % defects
  (targets: escape <= 3 %, overkill <= 3 %);
- ``rare``: casting with the training defects subsampled to 3 % of the parts: escape at the
  threshold where overkill is <= 5 % (target <= 2 %), balanced sampling against the weighted loss;
- ``sizes``: casting as variable-size, non-square crops (200-400 px, letterboxed) against the same
  crops squashed square (target: within 0.5 point);
- ``anomaly``: PatchCore fitted on good casting parts only, over several backbones: image ROC-AUC
  (target >= 0.95), escape at overkill <= 10 % (target <= 5 %);
- ``demo``: the quick demo story on several days and seeds: runs where every champion passes its
  plant's gate without being forced (target: 5 of 5);
- seconds of every training (target <= 10 minutes on 2 cores).

Run: .venv/bin/python benchmarks/defects.py [--only casting,synthetic,...] [--days 5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _common import CASTING, RESULTS, Recorder, casting_manifest, free_port, isolated_home

PARTS = ("casting", "synthetic", "rare", "sizes", "anomaly", "demo")


def synthetic_manifest(
    store: Any, cfg: Any, parts: int, rate: float, seed: int, day: int, purpose: str
) -> tuple[str, list[dict[str, Any]]]:
    """``parts`` synthetic parts of ``cfg``'s plant as one dataset version, straight from their
    metadata (benchmarks skip the gate)."""
    from andon.data.batches import parquet_to_frame
    from andon.data.datasets import build_manifest, save_manifest
    from andon.synth.plant import synthesize_plant

    batches = synthesize_plant(
        cfg, store, parts, seed=seed, defect_rate=rate, start=datetime(2026, 11, day, 6, tzinfo=UTC),
        batch_size=10_000, purpose=purpose,
    )  # fmt: skip
    objects = []
    for b in batches:
        meta = parquet_to_frame(store.get(b.metadata_key))
        objects += [{"key": r.image_key, "sha256": r.sha256, "label": r.label} for r in meta.itertuples()]
    m = build_manifest(cfg.id, objects, sources=[b.prefix for b in batches], purpose=purpose)
    save_manifest(store, m)
    return m.id, objects


def judge(rec: Recorder, name: str, store: Any, out: Any, test: list[dict[str, Any]], targets: tuple[float, float],
          **extra: Any) -> dict[str, float]:  # fmt: skip
    """Escape and overkill of a trained run on ``test`` at its operating point, as figures."""
    from andon.lifecycle.promotion import evaluate_model
    from andon.training.run import load_run

    m = evaluate_model(store, load_run(out.run_id), test)
    esc, ovk = targets
    common = {"defects": int(m["defects"]), "goods": int(m["goods"]), "threshold": round(m["threshold"], 6), **extra}
    rec.figure(f"{name}_escape_rate", m["escape_rate"], "ratio", f"<= {esc}", upper=round(m["escape_rate_upper"], 4),
               **common)  # fmt: skip
    rec.figure(f"{name}_overkill_rate", m["overkill_rate"], "ratio", f"<= {ovk}",
               upper=round(m["overkill_rate_upper"], 4), **common)  # fmt: skip
    rec.figure(f"{name}_roc_auc", m.get("roc_auc", float("nan")), "ratio")
    rec.figure(f"{name}_training_seconds", out.seconds, "s", "<= 600", epochs=out.epochs_run)
    return m


def escape_at_overkill(scores: Any, labels: Any, max_overkill: float) -> float:
    """The escape rate at the lowest threshold that rejects at most ``max_overkill`` of the good
    parts: what a model can do at that budget, threshold-free (on the test set itself)."""
    import numpy as np

    good = np.sort(np.asarray(scores)[labels == 0])
    allowed = int(np.floor(max_overkill * len(good)))
    threshold = np.nextafter(good[-allowed - 1], np.inf) if allowed < len(good) else good[0]
    return float((np.asarray(scores)[labels != 0] < threshold).mean())


def run_casting(rec: Recorder, store: Any) -> None:
    from andon.config import load_plant
    from andon.training.run import train_plant

    cfg = load_plant("plant-a")
    train_id, _, _ = casting_manifest(store, cfg, "train", 100_000, 1)
    _, test, _ = casting_manifest(store, cfg, "test", 100_000, 2)
    out = train_plant(store, cfg, [train_id])
    judge(rec, "casting_plant_a", store, out, test, (0.005, 0.01), train_images=out.metrics.get("n"))


def run_synthetic(rec: Recorder, store: Any) -> None:
    from andon.config import load_plant
    from andon.training.run import train_plant

    for i, plant in enumerate(("plant-b", "plant-c"), start=1):
        cfg = load_plant(plant)
        _, test = synthetic_manifest(store, cfg, 3000, 0.2, 90 + i, 20, "curated")
        for what, rate, purpose in (("line_rate", cfg.data.defect_rate, "production"), ("curated_30", 0.3, "curated")):
            train_id, _ = synthetic_manifest(store, cfg, 1500, rate, i, 10 + i, purpose)
            out = train_plant(store, cfg, [train_id], register=False)
            judge(rec, f"synthetic_{plant}_{what}", store, out, test, (0.03, 0.03), train_defect_rate=rate)


def test_scores(store: Any, loaded: Any, objects: list[dict[str, Any]]) -> tuple[Any, Any]:
    """(defect scores, labels) of ``loaded`` on ``objects``."""
    from andon.settings import get_settings
    from andon.training.data import ImageCache, load_split

    cache = ImageCache(get_settings().home / "cache" / "images")
    data = load_split(store, objects, loaded.classes, loaded.size, cache, transform=loaded.transform)
    return loaded.predict(data.images)[1], data.labels


def run_rare(rec: Recorder, store: Any) -> None:
    """Casting with 3 % defects in training: balanced sampling against the weighted loss."""
    import numpy as np

    from andon.config import load_plant
    from andon.data.datasets import build_manifest, save_manifest
    from andon.training.run import load_run, train_plant

    cfg = load_plant("plant-a")
    _, objects, _ = casting_manifest(store, cfg, "train", 100_000, 1)
    _, test, _ = casting_manifest(store, cfg, "test", 100_000, 2)
    ok = [o for o in objects if o["label"] == "ok"]
    bad = [o for o in objects if o["label"] == "defect"]
    keep = round(0.03 * len(ok) / 0.97)
    pick = np.random.default_rng(7).choice(len(bad), keep, replace=False)
    m = build_manifest(cfg.id, ok + [bad[i] for i in sorted(pick)], sources=["benchmark:rare"], purpose="curated")
    save_manifest(store, m)
    for sampling in ("balanced", "weighted_loss"):
        training = cfg.recipe.training.model_copy(update={"sampling": sampling})
        recipe = cfg.recipe.model_copy(update={"training": training})
        out = train_plant(store, cfg, [m.id], recipe=recipe, register=False)
        metrics = judge(rec, f"rare_casting_{sampling}", store, out, test, (0.02, 0.05), train_defects=keep)
        scores, labels = test_scores(store, load_run(out.run_id), test)
        rec.figure(f"rare_casting_{sampling}_escape_at_overkill_5pct", escape_at_overkill(scores, labels, 0.05),
                   "ratio", "<= 0.02", train_defects=keep, defects=int(metrics["defects"]))  # fmt: skip


def crops(src: Path, dst: Path, limit: int) -> None:
    """Variable-size, non-square crops of casting images (a different camera crop per part): a
    box of 70-100 % of each side at a random place, its longer side scaled to 200-400 px, grey PNG;
    the same folder layout (labels from folder names). Deterministic per file."""
    import hashlib

    import numpy as np
    from PIL import Image

    files = sorted(src.rglob("*.jpeg"))
    step = max(1, len(files) // limit)
    for f in files[::step][:limit]:
        rng = np.random.default_rng(int(hashlib.sha256(f.name.encode()).hexdigest()[:8], 16))
        with Image.open(f) as img:
            w, h = img.size
            cw, ch = int(w * rng.uniform(0.7, 1.0)), int(h * rng.uniform(0.7, 1.0))
            x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            box = img.convert("L").crop((x0, y0, x0 + cw, y0 + ch))
            scale = rng.uniform(200, 400) / max(cw, ch)
            box = box.resize((max(1, round(cw * scale)), max(1, round(ch * scale))), Image.Resampling.BILINEAR)
        out = dst / f.relative_to(src.parent).with_suffix(".png")
        out.parent.mkdir(parents=True, exist_ok=True)
        box.save(out)


def run_sizes(rec: Recorder, store: Any) -> None:
    """The same casting parts as square 300 px images (resize) and as variable-size crops (letterbox),
    both through Andon's ingest, transform and training; the crops' plant declares its camera's
    size range instead of one size."""
    from andon.config import load_plant
    from andon.data.batches import parquet_to_frame
    from andon.data.datasets import build_manifest, save_manifest
    from andon.data.ingest import ingest_folder
    from andon.training.run import train_plant

    base = load_plant("plant-a")
    tmp = Path(tempfile.mkdtemp(prefix="andon-crops-"))
    for split, limit in (("train", 2000), ("test", 715)):
        crops(CASTING / split, tmp, limit)
    letterbox = base.recipe.image.model_copy(update={"transform": "letterbox"})
    cropped = base.model_copy(update={
        "camera": base.camera.model_copy(update={"size_range": (140, 400), "color_mode": "L"}),
        "recipe": base.recipe.model_copy(update={"image": letterbox}),
    })  # fmt: skip
    results = {}
    for what, cfg, root in (("square", base, CASTING), ("crops_letterbox", cropped, tmp)):
        ids = {}
        for split, limit, day in (("train", 2000, 3), ("test", 715, 4)):
            batches = ingest_folder(cfg, store, root / split, limit=limit, start=datetime(2026, 11, day, tzinfo=UTC),
                                    mixed=True, purpose="curated")  # fmt: skip
            objects = []
            for b in batches:
                meta = parquet_to_frame(store.get(b.metadata_key))
                objects += [{"key": r.image_key, "sha256": r.sha256, "label": r.label} for r in meta.itertuples()]
            m = build_manifest(cfg.id, objects, sources=[b.prefix for b in batches], purpose="curated")
            save_manifest(store, m)
            ids[split] = (m.id, objects)
        out = train_plant(store, cfg, [ids["train"][0]], register=False)
        results[what] = judge(rec, f"sizes_{what}", store, out, ids["test"][1], (0.005, 0.01), train_images=2000)
    for metric in ("escape_rate", "overkill_rate"):
        delta = abs(results["crops_letterbox"][metric] - results["square"][metric]) * 100
        rec.figure(f"sizes_{metric}_difference_points", delta, "points", "<= 0.5")


def run_anomaly(rec: Recorder, store: Any) -> None:
    """PatchCore on good casting parts only, over three backbones: untrained, a classifier of the
    synthetic plants (the fleet's model when casting is new to it: it never saw a casting image),
    and plant-a's own casting classifier (an upper bound: it learned casting defects from labels)."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from andon.config import load_plant
    from andon.models import build_model
    from andon.training.anomaly import anomaly_scores, calibrate, fit_patchcore
    from andon.training.run import load_run, train_plant

    cfg = load_plant("plant-a")
    size = cfg.recipe.image.size
    _, train, _ = casting_manifest(store, cfg, "train", 100_000, 1)
    _, test, _ = casting_manifest(store, cfg, "test", 100_000, 2)
    from andon.settings import get_settings
    from andon.training.data import ImageCache, load_split

    cache = ImageCache(get_settings().home / "cache" / "images")
    good = [o for o in train if o["label"] == "ok"]
    fit_set = load_split(store, good[:1000], cfg.recipe.classes, size, cache).images
    val_set = load_split(store, good[1000:1400], cfg.recipe.classes, size, cache).images
    test_set = load_split(store, test, cfg.recipe.classes, size, cache)
    backbones: dict[str, Any] = {"untrained": build_model("small_cnn", 1, 2, cfg.recipe.model.width)}
    synth = load_plant("plant-b")
    synth_id, _ = synthetic_manifest(store, synth, 1500, 0.3, 40, 25, "curated")
    out = train_plant(store, synth, [synth_id], register=False)
    backbones["synthetic_fleet"] = load_run(out.run_id).model
    labelled = train_plant(store, cfg, [casting_manifest(store, cfg, "train", 2000, 5)[0]], register=False)
    backbones["casting_classifier_upper_bound"] = load_run(labelled.run_id).model
    for name, net in backbones.items():
        for strides in ((4, 8), (32,)):
            what = f"{name}_strides_{'_'.join(map(str, strides))}"
            t0 = time.perf_counter()
            pc = fit_patchcore(net.eval(), fit_set, memory_size=4000, strides=strides)
            fit_s = time.perf_counter() - t0
            info = calibrate(pc, anomaly_scores(pc, val_set), 0.10)
            scores = anomaly_scores(pc, test_set.images)
            labels = test_set.labels
            reject = np.asarray(scores) >= info["raw_threshold"]
            rec.figure(f"anomaly_{what}_image_auroc", roc_auc_score(labels != 0, scores), "ratio", ">= 0.95",
                       good_parts_fitted=len(fit_set), fit_s=round(fit_s, 1))  # fmt: skip
            rec.figure(f"anomaly_{what}_escape_at_overkill_10pct", escape_at_overkill(scores, labels, 0.10), "ratio",
                       "<= 0.05", defects=int((labels != 0).sum()))  # fmt: skip
            rec.figure(f"anomaly_{what}_escape_at_threshold_from_good_parts", float((~reject[labels != 0]).mean()),
                       "ratio", overkill=round(float(reject[labels == 0].mean()), 4))  # fmt: skip


def run_demo(rec: Recorder, days: int) -> None:
    """``andon demo --quick`` on ``days`` days and seeds, each in its own home and ports: how many end
    with every plant's champion past its gate (not forced) and plant-b's retrain promoted."""
    from andon.settings import REPO_ROOT

    good = 0
    for i in range(days):
        day = (datetime(2026, 11, 26, tzinfo=UTC) + timedelta(days=7 * i)).date().isoformat()
        home = Path(tempfile.mkdtemp(prefix="andon-demo-"))
        env = {**os.environ, "ANDON_HOME": str(home), "ANDON_PREFECT_PORT": str(free_port()),
               "ANDON_MLFLOW_PORT": str(free_port())}  # fmt: skip
        for var in ("ANDON_CONFIGS_DIR", "ANDON_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI", "PREFECT_API_URL"):
            env.pop(var, None)
        exe = str(Path(sys.executable).with_name("andon"))
        t0 = time.perf_counter()
        done = subprocess.run([exe, "demo", "--quick", "--day", day, "--seed", str(i)], env=env, cwd=REPO_ROOT,
                              capture_output=True, text=True, check=False)  # fmt: skip
        subprocess.run([exe, "down"], env=env, cwd=REPO_ROOT, capture_output=True, check=False)
        path = home / "demo" / "state.json"
        state = json.loads(path.read_text()) if path.exists() else {}
        chapters = state.get("done", {})
        champions = chapters.get("fine-tune", {}).get("champions", {})
        caught = len(champions) == 3 and all(c["passed"] for c in champions.values())
        promoted = bool(chapters.get("lighting", {}).get("promoted"))
        good += caught
        rec.figure(f"demo_{day}_seed_{i}_every_champion_passed_its_gate", float(caught), "bool", exit=done.returncode,
                   retrain_promoted=promoted, seconds=round(time.perf_counter() - t0),
                   champions={p: {k: c.get(k) for k in ("escape_rate", "overkill_rate", "defects", "passed")}
                              for p, c in champions.items()})  # fmt: skip
    rec.figure("demo_runs_where_every_champion_catches_defects", good, "runs", f"{days} of {days}", runs=days)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts of {PARTS}")
    parser.add_argument("--days", type=int, default=5, help="quick demo runs (days and seeds)")
    args = parser.parse_args()
    only = [p for p in args.only.split(",") if p]
    if not CASTING.is_dir():
        print(json.dumps({"figure": "defects", "skipped": f"{CASTING} not found"}))
        return
    isolated_home()
    from andon.storage import open_store

    store = open_store()
    rec = Recorder("defects")
    # a run of some parts keeps the other parts' latest figures
    previous = RESULTS / "defects.jsonl"
    kept = [json.loads(x) for x in previous.read_text().splitlines()] if previous.exists() else []
    rec.rows = [r for r in kept if r["figure"] != "_machine" and r["figure"].split("_")[0] not in only]
    for part in only:
        t0 = time.perf_counter()
        if part == "demo":
            run_demo(rec, args.days)
        else:
            globals()[f"run_{part}"](rec, store)
        rec.figure(f"{part}_benchmark_seconds", time.perf_counter() - t0, "s")
        rec.save()  # after every part: a long run that stops late keeps what it measured


if __name__ == "__main__":
    main()
