"""Synthetic plant throughput: 10,000 part images on 2 cores (target: under 30 s).

Figures: the full ``synthesize_plant`` path (render + PNG encode in 2 worker processes, object
writes, metadata, sensors) against the bare renderer (``render_part`` + ``encode_png`` in one
process, no I/O) in the same run; the ratio shows what parallelism and the store add or cost.

Run: .venv/bin/python benchmarks/synth.py [--parts 10000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from _common import Recorder, peak_rss_mb


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--parts", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    from andon.config import load_plant
    from andon.storage import LocalObjectStore
    from andon.synth.images import Optics, encode_png, render_part
    from andon.synth.plant import synthesize_plant

    rec = Recorder("synth")
    cfg = load_plant("plant-b")

    # the bare baseline: render + encode, one process, no I/O (1,000 parts, rate extrapolated)
    n_bare = min(1000, args.parts)
    sku = cfg.skus[0]
    t0 = time.perf_counter()
    for i in range(n_bare):
        encode_png(render_part(0, i, 128, sku, "scratch" if i % 20 == 0 else None, Optics(noise_std=5.0)))
    bare_rate = n_bare / (time.perf_counter() - t0)
    rec.figure("bare_render_encode_images_per_s_1core", bare_rate, "images/s")

    with tempfile.TemporaryDirectory() as tmp:
        store = LocalObjectStore(Path(tmp))
        t0 = time.perf_counter()
        batches = synthesize_plant(
            cfg, store, args.parts, seed=0, start=datetime(2026, 11, 1, tzinfo=UTC), workers=args.workers
        )
        elapsed = time.perf_counter() - t0
        assert sum(b.parts for b in batches) == args.parts
        size_mb = sum(o.size for o in store.list("")) / 1e6
    rate = args.parts / elapsed
    rec.figure(
        f"synthesize_{args.parts}_parts_seconds",
        elapsed,
        "s",
        "< 30 for 10,000 on 2 cores",
        workers=args.workers,
    )
    rec.figure("synthesize_images_per_s", rate, "images/s", ">= 333")
    rec.figure(
        "synthesize_vs_bare_1core_ratio",
        rate / bare_rate,
        "ratio",
        note="> 1 means the worker pool more than pays for object writes, metadata and sensors",
    )
    rec.figure("synthesize_output_mb", size_mb, "MB")
    rec.figure("peak_rss_parent_mb", peak_rss_mb(), "MB", note="the render workers are not included")
    rec.save()


if __name__ == "__main__":
    main()
