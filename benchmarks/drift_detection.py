"""Drift detection (issue 6): how fast each detector finds known changes, how often it cries wolf,
and how fast the monitor runs.

The stream is built from really scored parts: a small_cnn trained on 600 casting images (its
reference profile is the one stored at registration), then the 715 casting test images under
each condition (untouched, lighting -40 %, focus blur, new material = gamma + texture noise,
camera rotation 20 degrees, a harmless +5 % brightness inside the augmentation range), each
decoded, measured and predicted exactly like scoring does. A line makes 10 parts/s: a 5-minute
window draws 3,000 parts from the condition's pool, 2 % of them reviewed (60 labels). Label-only
changes (the model's accuracy drops by 15 or 5 points, features unchanged: a new defect type)
flip reviewed outcomes. Every window goes through the monitor's own series and ``chart_series``
(Phase I baseline from the first 72 windows, limits from the plant's false-alarm budget).

Detectors: Shewhart, EWMA, CUSUM (any series), the label-free estimate (estimated accuracy)
plus data drift (no labels at all), the common plant rule (24 h mean accuracy 1 sd below the
historical mean, sd of daily means over 7 stable days), and Evidently's drift share (hourly).
``data_charts``: the image-statistics and embedding charts alone (the ones the augmentation
tolerance band governs; prediction and performance charts react to what the model does).

Run: .venv/bin/python benchmarks/drift_detection.py [--runs 10] [--stable-days 30]
(the two label-only accuracy drops run 4x --runs: their medians sit on a window boundary)
"""

from __future__ import annotations

import argparse
import resource
import time
from datetime import UTC, datetime, timedelta

from _common import CASTING, Recorder, casting_champion, isolated_home

PARTS_PER_WINDOW = 3000  # 10 parts/s x 5 min
LABELS_PER_WINDOW = 60  # 2 % reviewed
WINDOW_MIN = 5


def conditions():  # type: ignore[no-untyped-def]
    import numpy as np
    from PIL import Image, ImageFilter

    def clip(a):  # type: ignore[no-untyped-def]
        return np.clip(a, 0, 255).astype(np.uint8)

    noise = np.random.default_rng(0)
    return {
        "stable": lambda g: g,
        "harmless_brightness_plus5pct": lambda g: clip(g.astype(np.float32) * 1.05),
        "lighting_minus40pct": lambda g: clip(g.astype(np.float32) * 0.6),
        "focus_blur": lambda g: np.asarray(Image.fromarray(g).filter(ImageFilter.GaussianBlur(2.5))),
        "new_material": lambda g: clip(255 * (g / 255.0) ** 1.5 + noise.normal(0, 8, g.shape)),
        "camera_rotation_20deg": lambda g: np.asarray(
            Image.fromarray(g).rotate(20, resample=Image.Resampling.BILINEAR, fillcolor=int(np.median(g)))
        ),
    }


def build_pools(champion, ref, size: int):  # type: ignore[no-untyped-def]
    """Per condition: features (n, F), probabilities (n, C), true defect flags."""
    import io

    import numpy as np
    from PIL import Image

    from andon.monitoring.reference import calibrated_confidence
    from andon.training.data import decode_grey
    from andon.validation.images import image_stats_from_bytes

    files = sorted(p for p in (CASTING / "test").rglob("*.jpeg"))
    originals = [p.read_bytes() for p in files]
    greys = [np.asarray(Image.open(io.BytesIO(b)).convert("L")) for b in originals]
    truth_arr = np.array([p.parent.name.startswith("def") for p in files])
    pools = {}
    for name, fn in conditions().items():
        encoded = []
        for raw, g in zip(originals, greys, strict=True):
            if name == "stable":  # the files as the camera wrote them
                encoded.append(raw)
                continue
            buf = io.BytesIO()
            Image.fromarray(fn(g)).save(buf, format="JPEG", quality=95)
            encoded.append(buf.getvalue())
        # exactly what scoring does: the gate's statistics of the bytes, then the training decode
        st = [image_stats_from_bytes("part", b) for b in encoded]
        stats = np.array([[r["brightness"], r["contrast"], r["sharpness"]] for r in st])
        small = [decode_grey(b, size) for b in encoded]
        probs, emb = champion.predict(np.stack(small))
        pred_defect = probs.argmax(1) != 0
        pools[name] = {
            "features": np.concatenate([stats, emb], axis=1),
            "probs": probs,
            "conf": probs.max(1),
            "entropy": -(np.clip(probs, 1e-9, 1) * np.log(np.clip(probs, 1e-9, 1))).sum(1),
            "est": calibrated_confidence(probs, ref.temperature),
            "pred_defect": pred_defect,
            "defect": truth_arr,
            "correct": pred_defect == truth_arr,
        }
    return pools


def window_series_from_pool(pool, ref, spec, rng, flip: float = 0.0, labels: bool = True):  # type: ignore[no-untyped-def]
    """The monitor's series for one simulated window (same Series objects, numpy means)."""

    from andon.monitoring.reference import DRIFT_FEATURES
    from andon.monitoring.series import Series

    n = len(pool["conf"])
    idx = rng.integers(0, n, PARTS_PER_WINDOW)
    means = pool["features"][idx].mean(0)
    out = []
    for i, name in enumerate(DRIFT_FEATURES[: pool["features"].shape[1]]):
        fr = ref.features[name]
        out.append(
            Series(name, "data", "both", float(means[i]), PARTS_PER_WINDOW, fr.mean, fr.sd, spec.min_parts,
                   fr.tol_down, fr.tol_up, ref.n)
        )  # fmt: skip
    dr = float(pool["pred_defect"][idx].mean())
    sd = max((ref.defect_rate * (1 - ref.defect_rate)) ** 0.5, 1e-2)
    out.append(
        Series(
            "defect_rate",
            "prediction",
            "both",
            dr,
            PARTS_PER_WINDOW,
            ref.defect_rate,
            sd,
            spec.min_parts,
            n_ref=ref.n,
            binary=True,
        )
    )
    out.append(Series("confidence", "prediction", "down", float(pool["conf"][idx].mean()), PARTS_PER_WINDOW,
                      ref.confidence.mean, ref.confidence.sd, spec.min_parts, n_ref=ref.n))  # fmt: skip
    out.append(Series("entropy", "prediction", "up", float(pool["entropy"][idx].mean()), PARTS_PER_WINDOW,
                      ref.entropy.mean, ref.entropy.sd, spec.min_parts, n_ref=ref.n))  # fmt: skip
    ea = ref.estimated_accuracy
    out.append(Series("estimated_accuracy", "performance", "down", float(pool["est"][idx].mean()), PARTS_PER_WINDOW,
                      ea.mean, ea.sd, spec.min_parts, n_ref=ref.n))  # fmt: skip
    if labels:
        lab = idx[:LABELS_PER_WINDOW]
        correct = pool["correct"][lab] & (rng.random(LABELS_PER_WINDOW) >= flip)
        acc_sd = max((ref.accuracy * (1 - ref.accuracy)) ** 0.5, 1e-2)
        out.append(Series("accuracy", "performance", "down", float(correct.mean()), LABELS_PER_WINDOW, ref.accuracy,
                          acc_sd, spec.min_labels, n_ref=ref.n, detect_shift=spec.accuracy_drop_to_detect,
                          binary=True))  # fmt: skip
        return out, float(correct.mean()), LABELS_PER_WINDOW
    return out, float("nan"), 0


LABEL_FREE = None  # every series that does not need a reviewed label


def detectors(verdicts) -> dict[str, bool]:  # type: ignore[no-untyped-def]
    hit = {"shewhart": False, "ewma": False, "cusum": False, "label_free": False, "data_charts": False}
    for v in verdicts:
        if v.status != "breach":
            continue
        for r in v.rules:
            if r in hit:
                hit[r] = True
        if v.series != "accuracy":
            hit["label_free"] = True
        if v.kind == "data":  # the image statistics and embedding only (no prediction, no performance)
            hit["data_charts"] = True
    hit["any_chart"] = hit["shewhart"] or hit["ewma"] or hit["cusum"]
    return hit


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--stable-days", type=int, default=30)
    parser.add_argument("--evidently-hours", type=int, default=24)
    args = parser.parse_args()
    home = isolated_home()
    import numpy as np

    from andon.config import load_plant
    from andon.monitoring.monitor import budget_for, chart_series, limits_of
    from andon.monitoring.reference import load_reference
    from andon.scoring.batch import Champion
    from andon.storage import open_store

    rec = Recorder("drift_detection")
    store = open_store()
    cfg = load_plant("plant-a")
    # benchmarks/explain.py's casting model, but with all the recipe's augmentations: the
    # photometric ones define the tolerance bands monitoring allows for
    out = casting_champion(store, cfg, flips_only=False)
    ref, ref_frame = load_reference(out.model_name, out.version)
    champion = Champion.load(cfg)
    pools = build_pools(champion, ref, champion.size)
    spec = cfg.monitoring
    budget = budget_for(cfg, ref)
    for group, reviewed, one_sided in (("data_two_sided", False, False), ("reviewed_one_sided", True, True)):
        lim = budget.limits(reviewed, one_sided)
        rec.figure(f"per_chart_in_control_arl_windows_{group}", lim.arl0 * (2 if one_sided else 1), "windows",
                   note="from 1 false alarm / plant / 30 days; half of it for the reviewed-label charts")  # fmt: skip
        rec.figure(f"limits_shewhart_cusum_ewma_{group}", lim.shewhart, "z", cusum_h=round(lim.cusum_h, 2),
                   ewma_L=round(lim.ewma_L, 2))  # fmt: skip
    for name, pool in pools.items():
        rec.figure(f"pool_accuracy_{name}", float(pool["correct"].mean()), "ratio", parts=len(pool["correct"]))

    # --- the common plant rule's history: daily accuracy over 7 stable days
    rng = np.random.default_rng(0)
    per_day = 288 * LABELS_PER_WINDOW
    daily = [float(rng.choice(pools["stable"]["correct"], per_day).mean()) for _ in range(7)]
    hist_mean, hist_sd = float(np.mean(daily)), float(np.std(daily, ddof=1))

    def run(scenario_pool: str, flip: float, labels: bool, seed: int, after: int, pre: int = 84) -> dict[str, float]:
        """Windows to first alarm per detector after the change (after = cap)."""
        r = np.random.default_rng(seed)
        state: dict = {"charts": {}, "active": {}}
        acc_hist: list[tuple[float, int]] = []
        found: dict[str, float] = {}
        for w in range(pre + after):
            changed = w >= pre
            pool = pools[scenario_pool] if changed else pools["stable"]
            series, acc, k = window_series_from_pool(pool, ref, spec, r, flip if changed else 0.0, labels)
            verdicts = [chart_series(state, s, limits_of(budget, s), True, spec.baseline_windows) for s in series]
            if labels:
                acc_hist = [*acc_hist[-287:], (acc, k)]
            if not changed:
                continue
            hit = detectors(verdicts)
            if labels and len(acc_hist) == 288 and (w - pre) % 12 == 0:  # the 24 h rule, checked hourly
                a24 = sum(a * n for a, n in acc_hist) / sum(n for _, n in acc_hist)
                hit["rule_24h_1sd"] = a24 < hist_mean - hist_sd
            for d, h in hit.items():
                if h and d not in found:
                    found[d] = (w - pre + 1) * WINDOW_MIN
            if len(found) >= 7:
                break
        return found

    scenarios = {
        "accuracy_drop_15pts": ("stable", 0.15 / max(pools["stable"]["correct"].mean(), 1e-6), True),
        "accuracy_drop_5pts": ("stable", 0.05 / max(pools["stable"]["correct"].mean(), 1e-6), True),
        "lighting_minus40pct": ("lighting_minus40pct", 0.0, True),
        "focus_blur": ("focus_blur", 0.0, True),
        "new_material": ("new_material", 0.0, True),
        "camera_rotation_20deg": ("camera_rotation_20deg", 0.0, True),
        "lighting_minus40pct_no_labels": ("lighting_minus40pct", 0.0, False),
        "focus_blur_no_labels": ("focus_blur", 0.0, False),
        "harmless_brightness_plus5pct": ("harmless_brightness_plus5pct", 0.0, True),
    }
    cap = 2 * 288  # 48 h
    t0 = time.perf_counter()
    for name, (pool, flip, labels) in scenarios.items():
        # label-only drops: a median that sits on a window boundary needs more runs to be trusted
        # (features unchanged, so the label-free detectors never fire: those runs stop after 24 h)
        label_only = name.startswith("accuracy_drop")
        n_runs = args.runs * (4 if label_only else 1)
        runs = [run(pool, flip, labels, 100 + i, 288 if label_only else cap) for i in range(n_runs)]
        for d in ("shewhart", "ewma", "cusum", "label_free", "data_charts", "rule_24h_1sd"):
            delays = [r[d] for r in runs if d in r]
            row = {"detected_runs": len(delays), "runs": len(runs)}
            if delays:
                row["p90_minutes"] = round(float(np.percentile(delays, 90)), 1)
            median = float(np.median(delays)) if len(delays) * 2 > len(runs) else float("inf")
            rec.figure(f"{name}__{d}__median_delay_minutes", median if median != float("inf") else -1, "minutes",
                       note=f"-1: not detected in most runs within {24 if label_only else 48} h", **row)  # fmt: skip
    rec.figure("detection_simulation_seconds", time.perf_counter() - t0, "s")

    # --- false alarms over stable days (new alerts, with the monitor's hysteresis)
    t0 = time.perf_counter()
    r = np.random.default_rng(7)
    state: dict = {"charts": {}, "active": {}}
    alarms = {"shewhart": 0, "ewma": 0, "cusum": 0, "any_series_any_chart": 0}
    active: set[str] = set()
    acc_hist: list[tuple[float, int]] = []
    rule_alarms, rule_active = 0, False
    for w in range(args.stable_days * 288):
        series, acc, k = window_series_from_pool(pools["stable"], ref, spec, r)
        verdicts = [chart_series(state, s, limits_of(budget, s), True, spec.baseline_windows) for s in series]
        for v in verdicts:
            if v.status == "breach" and v.series not in active:
                active.add(v.series)
                alarms["any_series_any_chart"] += 1
                for rule in v.rules:
                    alarms[rule] += 1
            elif v.status in ("ok", "baseline"):
                active.discard(v.series)
        acc_hist = [*acc_hist[-287:], (acc, k)]
        if len(acc_hist) == 288 and w % 12 == 0:
            a24 = sum(a * n for a, n in acc_hist) / sum(n for _, n in acc_hist)
            hit = a24 < hist_mean - hist_sd
            rule_alarms += int(hit and not rule_active)
            rule_active = hit
    for k, v in alarms.items():
        rec.figure(
            f"false_alarms_{k}_per_{args.stable_days}_stable_days", v, "alarms", "<= 1" if k.startswith("any") else None
        )
    rec.figure(f"false_alarms_rule_24h_1sd_per_{args.stable_days}_stable_days", rule_alarms, "alarms")
    rec.figure("stable_simulation_seconds", time.perf_counter() - t0, "s", windows=args.stable_days * 288)

    evidently_figures(rec, pools, ref_frame, args.evidently_hours)
    speed_figures(rec, store, cfg, pools, home)
    rec.figure("peak_rss_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "MB")
    rec.save()


def _frame(pool, idx):  # type: ignore[no-untyped-def]
    import pandas as pd

    from andon.monitoring.reference import DRIFT_FEATURES

    return pd.DataFrame(pool["features"][idx], columns=list(DRIFT_FEATURES[: pool["features"].shape[1]]))


def evidently_figures(rec, pools, ref_frame, hours: int) -> None:  # type: ignore[no-untyped-def]
    """Evidently's drift share (>= 0.5 = drift) on hourly windows, sampled to 5,000 rows."""
    import numpy as np
    from evidently import Report
    from evidently.presets import DataDriftPreset

    from andon.monitoring.drift import _summary

    cols = [c for c in ref_frame.columns if c in ("brightness", "contrast", "sharpness") or c.startswith("emb_")]
    rng = np.random.default_rng(11)

    def share(pool) -> tuple[float, float]:  # type: ignore[no-untyped-def]
        idx = rng.integers(0, len(pool["conf"]), 5000)
        t = time.perf_counter()
        snap = Report([DataDriftPreset()]).run(_frame(pool, idx)[cols], ref_frame[cols])
        return _summary(snap.dict())[0], time.perf_counter() - t

    results = [share(pools["stable"]) for _ in range(hours)]
    fa = sum(s >= 0.5 for s, _ in results)
    rec.figure(
        "evidently_false_alarms_per_30_days", fa * 720 / hours, "alarms", "<= 1", measured_hours=hours, alarms=fa
    )
    rec.figure("evidently_seconds_per_hourly_report", float(np.mean([t for _, t in results])), "s", rows=5000)
    for name in (
        "lighting_minus40pct",
        "focus_blur",
        "new_material",
        "camera_rotation_20deg",
        "harmless_brightness_plus5pct",
    ):
        s, _ = share(pools[name])
        rec.figure(f"evidently_drift_share_{name}", s, "share", "alarm at >= 0.5",
                   note="first hourly report after the change: delay <= 60 min when >= 0.5")  # fmt: skip


def speed_figures(rec, store, cfg, pools, home) -> None:  # type: ignore[no-untyped-def]
    """The real monitor over the prediction log: 5-minute, hourly and nightly runs on 864,000 rows."""
    import numpy as np

    from andon.monitoring.monitor import monitor
    from andon.scoring.batch import resolve_champion
    from andon.scoring.predlog import PredictionLog

    name, version = resolve_champion(cfg)
    pool = pools["stable"]
    log = PredictionLog(store, cfg.id)
    end = datetime(2026, 11, 27, tzinfo=UTC)
    start = end - timedelta(hours=24)
    n = 864_000
    rng = np.random.default_rng(5)
    step = timedelta(seconds=86_400 / n)
    t0 = time.perf_counter()
    for lo in range(0, n, 36_000):
        idx = rng.integers(0, len(pool["conf"]), 36_000)
        f = pool["features"][idx]
        rows = [
            {
                "part_id": f"p{lo + i:07d}", "line": "line-1", "scored_at": start + (lo + i) * step, "model_name": name,
                "model_version": version, "predicted_class": "defect" if pool["pred_defect"][j] else "ok",
                "probabilities": pool["probs"][j].tolist(), "entropy": float(pool["entropy"][j]),
                "brightness": float(f[i, 0]), "contrast": float(f[i, 1]), "sharpness": float(f[i, 2]),
                "embedding": f[i, 3:].tolist(),
            }
            for i, j in enumerate(idx)
        ]  # fmt: skip
        for k in range(0, len(rows), 3000):
            log.append(rows[k : k + 3000])
    rec.figure("predlog_fill_seconds", time.perf_counter() - t0, "s", rows=n)
    cases = (("incremental_5min", timedelta(minutes=5), False, "< 2"),
             ("hourly_36k", timedelta(hours=1), True, "< 10"),
             ("nightly_864k", timedelta(hours=24), True, "< 90"))  # fmt: skip
    for label, window, report, target in cases:
        t0 = time.perf_counter()
        result = monitor(store, cfg, end=end, window=window, drift_report=report)
        rec.figure(f"monitor_{label}_seconds", time.perf_counter() - t0, "s", target, parts=result.parts)
    # plain numpy over the same hour: read the columns, compute the same means
    t0 = time.perf_counter()
    frame = log.read(
        end - timedelta(hours=1), end, columns="brightness, contrast, sharpness, embedding, probabilities, entropy"
    )
    emb = np.stack(frame["embedding"].to_numpy())
    probs = np.stack(frame["probabilities"].to_numpy())
    _ = (frame[["brightness", "contrast", "sharpness"]].to_numpy().mean(0), emb.mean(0), probs.max(1).mean(),
         frame["entropy"].mean(), (probs.argmax(1) != 0).mean())  # fmt: skip
    plain = time.perf_counter() - t0
    rec.figure("plain_numpy_hourly_stats_seconds", plain, "s", parts=len(frame))
    t0 = time.perf_counter()
    monitor(store, cfg, end=end, window=timedelta(hours=1), drift_report=False)
    ours = time.perf_counter() - t0
    rec.figure("monitor_hourly_without_report_vs_plain_numpy_ratio", ours / plain, "ratio",
               note="monitor also reads labels, charts, 24 h rule, writes state")  # fmt: skip


if __name__ == "__main__":
    main()
