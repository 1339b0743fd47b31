"""Write a synthetic plant's production into the object store, batch by batch.

Example:
    >>> from andon.config import load_plant
    >>> from andon.storage import open_store
    >>> from andon.synth.plant import synthesize_plant
    >>> batches = synthesize_plant(load_plant("plant-b"), open_store("file:///tmp/doc-objects"), parts=20)
    >>> sum(b.parts for b in batches)
    20

Rendering runs in worker processes (PNG encoding included); the parent only writes objects, so
two cores give close to twice the single-core rate. Output depends only on the plant config,
``seed``, ``start`` and the drift knobs: re-running writes the same keys with the same bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing import get_context
from typing import Any

import numpy as np

from andon.config import PlantConfig, Sku
from andon.data.batches import (
    PURPOSES,
    BatchInfo,
    ensure_new_or_same,
    raw_batch_prefix,
    sha256_bytes,
    write_batch_tables,
)
from andon.errors import DataError
from andon.storage import ObjectStore, join_key
from andon.synth.images import DEFECT_TYPES, Drift, Optics, encode_png, render_part
from andon.synth.mes import mes_events
from andon.synth.sensors import SensorDrift, sensor_frame

Progress = Callable[[int], None]


@dataclass(frozen=True)
class _Job:
    seed: int
    start_index: int
    size: int
    skus: tuple[Sku, ...]
    sku_idx: tuple[int, ...]
    defects: tuple[str | None, ...]
    optics: Optics
    mode: str = "L"


MAX_RENDER_SIZE = 128  # larger camera frames are rendered at this size and resized (5x cheaper at 300 px)


def _render_job(job: _Job) -> list[bytes]:
    from PIL import Image

    render = min(job.size, MAX_RENDER_SIZE)
    out = []
    for i, (s, d) in enumerate(zip(job.sku_idx, job.defects, strict=True)):
        img = render_part(job.seed, job.start_index + i, render, job.skus[s], d, job.optics)
        if render != job.size:
            img = np.asarray(Image.fromarray(img).resize((job.size, job.size), Image.Resampling.BICUBIC))
        out.append(encode_png(img, job.mode))
    return out


def _line_seed(seed: int, line_no: int) -> int:
    return int(np.random.default_rng([seed, line_no, 0x11E]).integers(0, 2**31 - 1))


def _chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for lo in range(0, n, size):
        yield lo, min(n, lo + size)


def synthesize_plant(
    cfg: PlantConfig,
    store: ObjectStore,
    parts: int,
    *,
    seed: int = 0,
    start: datetime | None = None,
    drift: Drift | None = None,
    sensor_drift: SensorDrift | None = None,
    defect_rate: float | None = None,
    lines: list[str] | None = None,
    new_sku: Sku | None = None,
    new_sku_share: float = 0.3,
    batch_size: int | None = None,
    disabled_failures: tuple[str, ...] = (),
    mes_events_per_day: float = 3.0,
    workers: int = 2,
    progress: Progress | None = None,
    purpose: str = "production",
) -> list[BatchInfo]:
    """Produce ``parts`` parts spread over the plant's lines (by their rates) as raw batches.

    Args:
        start: time of the first part (UTC); default the start of the current hour.
        drift: lighting / camera / material changes on top of the plant's own camera and lighting.
        new_sku: a product not in the plant config (new geometry) taking ``new_sku_share`` of parts.
        disabled_failures: sensor failure types that never occur (introduce them later).
        mes_events_per_day: rate of random MES messages written beside the batches.
        workers: rendering processes; 1 renders in this process.
        progress: called with the number of parts finished since the last call.
        purpose: ``curated`` marks a training set made on purpose (e.g. enriched with defects by
            ``defect_rate``): the gate records its defect share instead of holding it to the line's bounds.
    """
    if parts < 1:
        raise DataError(f"parts must be at least 1, got {parts}")
    rate = cfg.data.defect_rate if defect_rate is None else defect_rate
    if not 0 <= rate <= 1:
        raise DataError(f"defect_rate must be within [0, 1], got {rate}")
    if purpose not in PURPOSES:
        raise DataError(f"purpose must be one of {', '.join(PURPOSES)}, got {purpose!r}")
    if not 0 <= new_sku_share <= 1:
        raise DataError(f"new_sku_share must be within [0, 1], got {new_sku_share}")
    chosen = lines or cfg.line_ids
    for ln in chosen:
        cfg.camera_for(ln)
    start = (start or datetime.now(UTC).replace(minute=0, second=0, microsecond=0)).astimezone(UTC)
    batch_size = batch_size or cfg.data.batch_size

    # split the parts across lines by their production rates
    rates = np.array([next(x for x in cfg.lines if x.id == ln).parts_per_second for ln in chosen])
    counts = np.floor(parts * rates / rates.sum()).astype(int)
    counts[: parts - counts.sum()] += 1

    skus = tuple(cfg.skus) + ((new_sku,) if new_sku else ())
    sku_weights = np.ones(len(cfg.skus)) / len(cfg.skus)
    if new_sku:
        sku_weights = np.append(sku_weights * (1 - new_sku_share), new_sku_share)

    # everything that shapes the bytes goes into the batch id: two different runs never share a
    # batch (and never overwrite each other's raw data); the same run twice writes the same keys
    knobs = json.dumps(
        {
            "parts": parts,
            "rate": rate,
            "lines": chosen,
            "batch_size": batch_size,
            "drift": (drift or Drift()).as_dict(),
            "sensor_drift": (sensor_drift or SensorDrift()).as_dict(),
            "new_sku": new_sku.model_dump() if new_sku else None,
            "share": new_sku_share,
            "disabled": sorted(disabled_failures),
            "config": cfg.sha256(),
            **({"purpose": purpose} if purpose != "production" else {}),  # production batch ids stay as they were
        },
        sort_keys=True,
        default=str,
    )
    run_digest = hashlib.sha256(knobs.encode()).hexdigest()[:8]
    pool: Executor | None = None
    if workers > 1:
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("forkserver"))
    batches: list[BatchInfo] = []
    try:
        for line, n_line in zip(chosen, counts, strict=True):
            if n_line == 0:
                continue
            line_cfg = next(x for x in cfg.lines if x.id == line)
            camera = cfg.camera_for(line)
            size = camera.resolution  # the camera's frame; models resize to the recipe's size
            optics = Optics.from_config(camera, cfg.lighting, cfg.data.material, drift)
            lseed = _line_seed(seed, cfg.line_ids.index(line))
            rng = np.random.default_rng([lseed, 0xDEF])
            is_defect = rng.uniform(0, 1, n_line) < rate
            kinds = rng.integers(0, len(DEFECT_TYPES), n_line)
            defects = tuple(DEFECT_TYPES[k] if d else None for d, k in zip(is_defect, kinds, strict=True))
            sku_idx = tuple(int(i) for i in rng.choice(len(skus), n_line, p=sku_weights))
            gaps = rng.exponential(1.0 / line_cfg.parts_per_second, n_line)
            times = [start + timedelta(seconds=float(t)) for t in np.cumsum(gaps)]

            for b_no, (lo, hi) in enumerate(_chunks(n_line, batch_size)):
                job_bounds = list(_chunks(hi - lo, 64))
                jobs = [
                    _Job(
                        lseed,
                        lo + a,
                        size,
                        skus,
                        sku_idx[lo + a : lo + b],
                        defects[lo + a : lo + b],
                        optics,
                        camera.color_mode,
                    )
                    for a, b in job_bounds
                ]
                results = pool.map(_render_job, jobs) if pool else map(_render_job, jobs)
                first = times[lo]
                date = first.strftime("%Y-%m-%d")
                batch_id = f"{first:%Y%m%dT%H%M%SZ}-s{seed}-{run_digest}"
                prefix = raw_batch_prefix(cfg, line, date, batch_id)
                ensure_new_or_same(store, prefix, run_digest)
                rows: list[dict[str, Any]] = []
                i = lo
                for pngs in results:
                    for png in pngs:
                        part_id = f"{cfg.id}-{line}-{times[i]:%Y%m%dT%H%M%S}-{i:06d}"
                        key = f"{prefix}/images/{part_id}.png"
                        store.put(key, png, "image/png")
                        rows.append(
                            {
                                "part_id": part_id,
                                "timestamp": times[i],
                                "line": line,
                                "sku": skus[sku_idx[i]].code,
                                "label": "defect" if defects[i] else "ok",
                                "defect_type": defects[i] or "none",
                                "image_key": key,
                                "sha256": sha256_bytes(png),
                                "source": "synthetic",
                            }
                        )
                        i += 1
                    if progress:
                        progress(len(pngs))
                import pandas as pd

                metadata = pd.DataFrame(rows)
                metadata["timestamp"] = pd.to_datetime(metadata["timestamp"], utc=True)
                sensors = sensor_frame(
                    cfg.sensors,
                    hi - lo,
                    lseed,
                    b_no,
                    sensor_drift,
                    tool_wear_start=0.1 * lo,
                    disabled_failures=disabled_failures,
                )
                sensors.insert(0, "part_id", metadata["part_id"])
                sensors.insert(1, "timestamp", metadata["timestamp"])
                sensors.insert(2, "line", line)
                sensors.insert(3, "sku", metadata["sku"])
                info = BatchInfo(
                    plant=cfg.id,
                    line=line,
                    date=date,
                    batch_id=batch_id,
                    prefix=prefix,
                    parts=hi - lo,
                    defects=int(sum(1 for d in defects[lo:hi] if d)),
                    origin="synthetic",
                    purpose=purpose,
                    details={
                        "seed": seed,
                        "run_digest": run_digest,
                        "defect_rate": rate,
                        "drift": (drift or Drift()).as_dict(),
                        "sensor_drift": (sensor_drift or SensorDrift()).as_dict(),
                        "new_sku": new_sku.model_dump() if new_sku else None,
                        "disabled_failures": list(disabled_failures),
                        "image_size": size,
                        "color_mode": camera.color_mode,
                        "first": times[lo].isoformat(),
                        "last": times[hi - 1].isoformat(),
                    },
                )
                batches.append(write_batch_tables(store, info, metadata, sensors))
    finally:
        if pool:
            pool.shutdown()

    # the MES messages of the same stretch of time, for the gateway and retraining scenarios
    last = max(datetime.fromisoformat(b.details["last"]) for b in batches)
    hours = max(1.0, (last - start).total_seconds() / 3600)
    events = mes_events(cfg, start, hours, seed, rate_per_day=mes_events_per_day)
    if events:
        key = join_key(cfg.object_prefix, "mes", start.strftime("%Y-%m-%d"), f"{start:%Y%m%dT%H%M%SZ}-s{seed}.jsonl")
        store.put(key, "\n".join(json.dumps(e) for e in events).encode() + b"\n", "application/x-ndjson")
    return batches
