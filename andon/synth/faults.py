"""Plant faults in a copy of a good raw batch: what a bad upload or a misconfigured line sends.

The source batch is only read; the faulty copy is a new batch beside it (``<batch-id>-faulty``),
so demos and tests can show the gate quarantining it.
"""

from __future__ import annotations

import json

from andon.data.batches import BatchInfo, frame_to_parquet, parquet_to_frame, read_batch_info
from andon.storage import ObjectStore

FAULTS = ("truncated-image", "unknown-sku", "missing-image", "time-goes-backwards", "stray-file")


def plant_faults(store: ObjectStore, batch_prefix: str, faults: tuple[str, ...] = FAULTS) -> BatchInfo:
    """Copy the batch at ``batch_prefix`` to ``<batch-id>-faulty`` with ``faults`` planted."""
    info = read_batch_info(store, f"{batch_prefix}/batch.json")
    new_id = f"{info.batch_id}-faulty"
    new_prefix = batch_prefix.rsplit("/", 1)[0] + f"/{new_id}"
    meta = parquet_to_frame(store.get(info.metadata_key))
    if len(meta) < 4:
        raise ValueError("need a batch of at least 4 parts to plant faults in")
    meta["image_key"] = meta["image_key"].str.replace(batch_prefix, new_prefix, regex=False)
    images = {o.key: store.get(o.key) for o in store.list(f"{batch_prefix}/images/")}
    moved = {k.replace(batch_prefix, new_prefix, 1): v for k, v in images.items()}
    keys = list(meta["image_key"])
    if "truncated-image" in faults:
        moved[keys[0]] = moved[keys[0]][: len(moved[keys[0]]) // 4]
    if "unknown-sku" in faults:
        meta.loc[1, "sku"] = "SKU-NOBODY-KNOWS"
    if "missing-image" in faults:
        moved.pop(keys[2], None)
    if "time-goes-backwards" in faults:
        meta.loc[3, "timestamp"] = (
            meta["timestamp"].iloc[0] - (meta["timestamp"].iloc[1] - meta["timestamp"].iloc[0]) * 100
        )
    if "stray-file" in faults:
        moved[f"{new_prefix}/images/notes.jpg"] = b"operator notes, saved with the wrong extension"
    for key, data in moved.items():
        store.put(key, data)
    store.put(f"{new_prefix}/metadata.parquet", frame_to_parquet(meta))
    if store.exists(info.sensors_key):
        store.copy(info.sensors_key, f"{new_prefix}/sensors.parquet")
    new = BatchInfo(
        plant=info.plant,
        line=info.line,
        date=info.date,
        batch_id=new_id,
        prefix=new_prefix,
        parts=len(meta),
        defects=info.defects,
        origin=info.origin,
        details={**info.details, "planted_faults": list(faults), "copied_from": batch_prefix},
    )
    from dataclasses import asdict

    store.put(f"{new_prefix}/batch.json", json.dumps(asdict(new), indent=2, sort_keys=True).encode())
    return new
