"""Validation gate speed (issue 3 targets, 2 cores):

- 1,000,000 sensor rows x 20 columns through the GX suite (ranges, numeric, not-null, learned
  means and missing rates, unique ids, per-line monotonic timestamps) in under 20 s;
- image checks at 300 or more 300x300 JPEGs per second (decode + statistics + the GX suite).

Each is compared, in the same run, with a plain pandas / numpy implementation of the same rules
(the GX overhead), and each runs in its own process so its peak memory is its own.

Run: .venv/bin/python benchmarks/validation.py [--rows 1000000] [--images 1000]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time
from pathlib import Path

from _common import Recorder

CASTING = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "casting"
N_COLS = 20


def _sensor_frame(rows: int, seed: int):  # type: ignore[no-untyped-def]
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f"s{i:02d}": rng.normal(50 + i, 3, rows).astype("float64") for i in range(N_COLS)})
    frame.insert(0, "part_id", [f"p{i:08d}" for i in range(rows)])
    lines = np.array(["line-1", "line-2", "line-3"])[np.arange(rows) % 3]
    frame.insert(1, "line", lines)
    frame.insert(2, "timestamp", pd.Timestamp("2026-11-01", tz="UTC") + pd.to_timedelta(np.arange(rows) * 100, "ms"))
    return frame


def _spec():  # type: ignore[no-untyped-def]
    from andon.validation.spec import ColumnRule, TableSpec

    cols = {f"s{i:02d}": ColumnRule(kind="number", min=0, max=200) for i in range(N_COLS)}
    return TableSpec(
        name="bench",
        id_column="part_id",
        timestamp_column="timestamp",
        group_column="line",
        columns={
            "part_id": ColumnRule(kind="text"),
            "line": ColumnRule(kind="category", values=("line-1", "line-2", "line-3")),
            "timestamp": ColumnRule(kind="timestamp"),
            **cols,
        },
    )


def _plain_table(frame, profile) -> bool:  # type: ignore[no-untyped-def]
    """The same rules in plain pandas / numpy."""
    import numpy as np
    import pandas as pd

    ok = len(frame) > 0 and set(frame.columns) == {"part_id", "line", "timestamp", *profile.columns}
    for col, p in profile.columns.items():
        v = pd.to_numeric(frame[col], errors="coerce")
        finite = v.replace([np.inf, -np.inf], np.nan)
        ok &= not (frame[col].notna() & finite.isna()).any()
        ok &= not finite.isna().any()
        ok &= bool(((finite >= 0) & (finite <= 200)).all())
        ok &= p.mean_low <= finite.mean() <= p.mean_high
        ok &= finite.isna().mean() <= p.max_missing_rate
    ok &= frame["part_id"].notna().all() and frame["part_id"].is_unique
    ok &= frame["line"].isin(["line-1", "line-2", "line-3"]).all()
    ts = frame["timestamp"]
    ok &= bool(ts.notna().all()) and ts.dt.tz is not None
    ok &= bool((ts.groupby(frame["line"]).diff().dropna() >= pd.Timedelta(0)).all())
    return bool(ok)


def table_job(rows: int, mode: str) -> tuple[float, float, bool]:
    from andon.validation.profile import learn_table
    from andon.validation.tables import validate_table

    spec = _spec()
    profile = learn_table(_sensor_frame(100_000, 1), spec, min_batch_rows=1000)
    frame = _sensor_frame(rows, 2)
    if mode == "gx":
        validate_table(frame.head(1000), spec, profile)  # GX import and context: a one-off per process
        t0 = time.perf_counter()
        ok = validate_table(frame, spec, profile).success
    else:
        t0 = time.perf_counter()
        ok = _plain_table(frame, profile)
    elapsed = time.perf_counter() - t0
    return elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, ok


def _plain_image_stats(paths: list[Path]) -> int:
    import numpy as np
    from PIL import Image

    n = 0
    for p in paths:
        with Image.open(p) as img:
            img.draft("L", img.size)
            g = np.asarray(img.convert("L"), dtype=np.float32)
        lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
        n += int(g.mean() >= 0) + int(g.std() >= 0) + int(lap.var() >= 0)
    return n


def image_job(n: int, mode: str) -> tuple[float, float, bool]:
    from andon.storage import LocalObjectStore
    from andon.validation.images import image_stats, validate_images
    from andon.validation.profile import learn_images

    store = LocalObjectStore(CASTING)
    keys = [o.key for o in store.list("train/")][:n]
    if mode == "gx":
        ref = image_stats(store, keys[:200])
        profile = learn_images(ref)
        validate_images(ref.head(20), size=(300, 300), mode="RGB", profile=profile)  # warm GX
        t0 = time.perf_counter()
        stats = image_stats(store, keys)
        ok = validate_images(stats, set(keys), (300, 300), "RGB", profile).success
    else:
        t0 = time.perf_counter()
        ok = _plain_image_stats([CASTING / k for k in keys]) > 0
    elapsed = time.perf_counter() - t0
    return elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, ok


def _in_child(fn, *args):  # type: ignore[no-untyped-def]
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--images", type=int, default=1000)
    args = parser.parse_args()
    rec = Recorder("validation")

    gx_s, gx_mb, gx_ok = _in_child(table_job, args.rows, "gx")
    plain_s, plain_mb, plain_ok = _in_child(table_job, args.rows, "plain")
    rec.figure(
        "sensor_table_gx_seconds",
        gx_s,
        "s",
        "< 20 for 1,000,000 x 20 on 2 cores",
        rows=args.rows,
        columns=N_COLS,
        passed=gx_ok,
    )
    rec.figure("sensor_table_plain_pandas_seconds", plain_s, "s", passed=plain_ok)
    rec.figure("sensor_table_gx_vs_plain_ratio", gx_s / plain_s, "ratio", note="GX time / plain time: the GX overhead")
    rec.figure("sensor_table_gx_peak_rss_mb", gx_mb, "MB")
    rec.figure("sensor_table_plain_peak_rss_mb", plain_mb, "MB")

    if CASTING.is_dir():
        gi_s, gi_mb, gi_ok = _in_child(image_job, args.images, "gx")
        pi_s, _, _ = _in_child(image_job, args.images, "plain")
        rec.figure("image_checks_per_s", args.images / gi_s, "images/s", ">= 300 (300x300 JPEG)", passed=gi_ok)
        rec.figure("image_plain_stats_per_s_1thread", args.images / pi_s, "images/s")
        rec.figure(
            "image_gx_vs_plain_ratio", gi_s / pi_s, "ratio", note="Andon (4 threads + GX) time / plain loop time"
        )
        rec.figure("image_checks_peak_rss_mb", gi_mb, "MB")
    else:
        print(f'{{"figure": "image_checks_per_s", "skipped": "{CASTING} not found"}}')
    rec.save()


if __name__ == "__main__":
    main()
