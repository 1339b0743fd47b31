"""`andon validate learn`: derive a plant's validation profile from known-good raw batches."""

from __future__ import annotations

from pathlib import Path

from andon.config import PlantConfig
from andon.data.batches import parquet_to_frame, read_plant_batch
from andon.errors import DataError
from andon.storage import ObjectStore
from andon.validation.gate import batch_prefix_from_uri
from andon.validation.images import image_stats
from andon.validation.profile import TableProfile, ValidationProfile, learn_images, learn_table, save_profile
from andon.validation.spec import sensor_spec


def learn_from_batches(
    store: ObjectStore,
    cfg: PlantConfig,
    references: list[str],
    min_batch_rows: int = 100,
    root: Path | None = None,
) -> tuple[ValidationProfile, Path]:
    """Learn sensor-column and image-statistic bounds from ``references`` and save the next
    profile version. The references should have passed the config rules (they are "known good")."""
    import pandas as pd

    if not references:
        raise DataError("give at least one --reference batch")
    sensors, prefixes = [], []
    stats: dict[str, list[pd.DataFrame]] = {}
    lines: dict[str, set[str]] = {}
    for uri in references:
        prefix = batch_prefix_from_uri(store, uri)
        if "/raw/" not in prefix:
            raise DataError(f"{prefix} is not a raw batch (<plant>/<line>/raw/<date>/<batch-id>)")
        info = read_plant_batch(store, cfg.id, prefix)
        prefixes.append(prefix)
        if store.exists(info.sensors_key):
            sensors.append(parquet_to_frame(store.get(info.sensors_key)))
        camera = cfg.camera_signature(info.line)
        stats.setdefault(camera, []).append(image_stats(store, [o.key for o in store.list(f"{prefix}/images/")]))
        lines.setdefault(camera, set()).add(info.line)
    tables: dict[str, TableProfile] = {}
    if sensors:
        tables["sensors"] = learn_table(pd.concat(sensors, ignore_index=True), sensor_spec(cfg), min_batch_rows)
    images = {}
    for camera, frames in stats.items():
        all_stats = pd.concat(frames, ignore_index=True)
        bad = int((~all_stats["decodes"].astype(bool)).sum())
        if bad:
            raise DataError(f"the reference holds {bad} image(s) that do not decode: it is not known-good")
        # every line that sees through this camera shares the bounds
        same = sorted(ln for ln in cfg.line_ids if cfg.camera_signature(ln) == camera)
        images[camera] = learn_images(all_stats, min(min_batch_rows, 50), camera=camera, lines=same)
    return save_profile(cfg.id, prefixes, tables, images, min_batch_rows, root)
