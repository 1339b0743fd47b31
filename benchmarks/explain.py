"""Explanations and the audit trail (issue 5):

- cost per flagged part of input x gradient and Grad-CAM (batched, and one part at a time as
  the service does it) against SHAP ``GradientExplainer`` (50 samples) on the same casting
  parts, in the same run;
- faithfulness of each: the defect-score drop when the top 10 % saliency pixels are blurred
  against 10 % random pixels (in 8x8 blocks, and scattered single pixels);
- the whole logged explanation per part (Grad-CAM + overlay PNG + store write);
- SHAP values per predicted failure of the AI4I sensor model;
- `andon audit` over 847 logged parts, each with a thumbnail and an overlay (target < 60 s).

The model: small_cnn trained on 600 casting images at 128 px (about a minute on 2 cores).
Run: .venv/bin/python benchmarks/explain.py
"""

from __future__ import annotations

import resource
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _common import Recorder, casting_champion, casting_manifest, isolated_home

AI4I = Path(__file__).resolve().parents[2] / "shared" / "data" / "ai4i2020" / "ai4i2020.csv"


def main() -> None:
    home = isolated_home()
    import numpy as np
    import torch

    from andon.config import load_plant
    from andon.explain.audit import audit_report
    from andon.explain.maps import deletion_drops, gradient_shap, saliency
    from andon.scoring.batch import Champion, explain_parts, score_batch
    from andon.storage import open_store
    from andon.training.data import ImageCache, load_split
    from andon.training.loop import to_tensor

    rec = Recorder("explain")
    store = open_store()
    cfg = load_plant("plant-a")
    out = casting_champion(store, cfg, flips_only=True)
    rec.figure("casting_model_accuracy", out.metrics["accuracy"], "ratio", note="600 images, 128 px, 6 epochs")
    champion = Champion.load(cfg)
    _, test_objects, _ = casting_manifest(store, cfg, "test", 200, 2)
    images = load_split(store, test_objects, tuple(champion.classes), 128, ImageCache(home / "cache")).images
    x = to_tensor(images)
    defect = champion.classes.index("defect")
    with torch.inference_mode():
        flagged = (champion.model(x).argmax(1) == defect).numpy()
    xf, imf = x[flagged], images[flagged]

    maps = {}
    for method in ("input_gradient", "gradcam"):
        saliency(champion.model, xf[:4], defect, method)  # warm
        t0 = time.perf_counter()
        maps[method] = saliency(champion.model, xf, defect, method)
        rec.figure(f"{method}_ms_per_part_batched", (time.perf_counter() - t0) * 1000 / len(xf), "ms", parts=len(xf))
        t0 = time.perf_counter()
        for i in range(len(xf)):
            saliency(champion.model, xf[i : i + 1], defect, method)
        rec.figure(f"{method}_ms_per_part_single", (time.perf_counter() - t0) * 1000 / len(xf), "ms")
    n_shap = min(8, len(xf))
    background = x[~flagged][:8]
    t0 = time.perf_counter()
    maps["shap_gradient"] = gradient_shap(champion.model, xf[:n_shap], background, defect, samples=50)
    rec.figure("shap_gradient_ms_per_part", (time.perf_counter() - t0) * 1000 / n_shap, "ms", parts=n_shap, samples=50)
    for name, m in maps.items():
        xs = xf[: len(m)]
        for patch in (8, 1):
            top, rand = deletion_drops(champion.model, xs, m, defect, fraction=0.1, patch=patch)
            kind = "random_8px_blocks" if patch == 8 else "random_pixels"
            rec.figure(
                f"{name}_faithfulness_top10_minus_{kind}",
                float(top.mean() - rand.mean()),
                "defect-probability drop",
                "> 0",
                top_drop=round(float(top.mean()), 4),
                random_drop=round(float(rand.mean()), 4),
                share_of_parts_top_beats_random=round(float(np.mean(top > rand)), 3),
                parts=len(xs),
            )

    rows = [{"part_id": f"bench-{i}", "predicted_class": "defect", "probabilities": [0.1, 0.9]} for i in range(len(xf))]
    t0 = time.perf_counter()
    explain_parts(store, cfg, champion, imf, rows)
    rec.figure(
        "logged_explanation_ms_per_part",
        (time.perf_counter() - t0) * 1000 / len(rows),
        "ms",
        note=f"{cfg.recipe.explain.method} + overlay PNG + store write + top regions",
    )

    # the audit: 847 parts, every one with an overlay (the worst case of a dispute)
    _, _, batches = casting_manifest(store, cfg, "train", 847, 3)
    spec = cfg.recipe.explain.model_copy(update={"pass_sample": 1.0})
    everyone = cfg.model_copy(update={"recipe": cfg.recipe.model_copy(update={"explain": spec})})
    t_from = datetime.now(UTC) - timedelta(seconds=5)
    parts = sum(score_batch(store, everyone, b.prefix).scored for b in batches)
    t_to = datetime.now(UTC) + timedelta(seconds=5)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report = audit_report(store, cfg, t_from, t_to, home / "audit")
    rec.figure(
        "audit_847_parts_seconds",
        report.seconds,
        "s",
        "< 60",
        parts=report.rows,
        scored=parts,
        html_mb=round(report.html_path.stat().st_size / 1e6, 2),
    )
    rec.figure("audit_peak_rss_mb", max(rss0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), "MB")

    if AI4I.exists():
        import pandas as pd

        from andon.lifecycle.registry import CHAMPION, set_alias
        from andon.scoring.sensor import score_sensor_table
        from andon.training.sensor import store_table, train_sensor

        manifest_id, _ = store_table(store, cfg, AI4I)
        sensor = train_sensor(store, cfg, manifest_id, epochs=15)
        set_alias(sensor.model_name, CHAMPION, sensor.version)
        frame = pd.read_csv(AI4I)
        plain = score_sensor_table(store, cfg, frame, explain=False)
        full = score_sensor_table(store, cfg, frame, explain=True)
        rec.figure("sensor_rows_per_s_without_shap", plain.rows / plain.seconds, "rows/s", rows=plain.rows)
        rec.figure(
            "sensor_shap_ms_per_predicted_failure",
            (full.seconds - plain.seconds) * 1000 / max(1, full.explained),
            "ms",
            failures=full.explained,
            note="DeepExplainer on the MLP + a JSON per failure in the store",
        )
    rec.figure("peak_rss_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "MB")
    rec.save()


if __name__ == "__main__":
    main()
