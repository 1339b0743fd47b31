"""Upload a real folder of labelled images into a plant's raw layout.

Labels come from folder names: a folder called ``def_front``, ``defect``, ``ng``... means
``defect``, one called ``ok_front``, ``ok``, ``good``... means ``ok`` (override with
``label_map``). Files keep their bytes exactly as they are (the sha256 recorded is of the
original file), part ids come from the relative path. Batch ids are content-addressed: a digest
over the images' bytes (not their names or labels), so a different folder never gets the id of
an earlier batch. Raw data is write-once: ingesting the same images again is a no-op, and a batch
whose id exists with other content (labels, SKU, bytes) is refused, never overwritten. Two files
whose key-safe names collide (``a b.png`` and ``a_b.png``) are refused before anything is written.

Example:
    >>> from andon.config import load_plant
    >>> from andon.data.ingest import ingest_folder
    >>> from andon.storage import open_store
    >>> infos = ingest_folder(load_plant("plant-a"), open_store(), "../shared/data/casting/test", limit=10)
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from andon.config import PlantConfig
from andon.data.batches import (
    PURPOSES,
    BatchInfo,
    content_digest,
    parquet_to_frame,
    put_once,
    raw_batch_prefix,
    read_batch_info,
    write_batch_tables,
)
from andon.errors import DataError
from andon.storage import ObjectStore

IMAGE_SUFFIXES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".bmp": "image/bmp"}
DEFECT_WORDS = ("def", "defect", "defective", "ng", "nok", "bad", "reject", "fail")
OK_WORDS = ("ok", "good", "pass", "normal")


def label_from_path(rel: Path, label_map: dict[str, str] | None = None) -> str | None:
    """The label of a file from the nearest folder name that says one, else ``None``."""
    for folder in reversed(rel.parts[:-1]):
        name = folder.lower()
        if label_map and folder in label_map:
            return label_map[folder]
        words = set(re.split(r"[^a-z]+", name))
        if words & set(DEFECT_WORDS):
            return "defect"
        if words & set(OK_WORDS):
            return "ok"
    return None


def _part_id(plant: str, rel: Path) -> str:
    stem = "-".join((*rel.parts[:-1], rel.stem))
    return f"{plant}-" + re.sub(r"[^A-Za-z0-9._-]+", "_", stem)


def ingest_folder(
    cfg: PlantConfig,
    store: ObjectStore,
    path: str | Path,
    *,
    line: str | None = None,
    sku: str | None = None,
    limit: int | None = None,
    start: datetime | None = None,
    batch_size: int | None = None,
    label_map: dict[str, str] | None = None,
    progress: Callable[[int], None] | None = None,
    mixed: bool = False,
    purpose: str = "production",
) -> list[BatchInfo]:
    """Upload every image under ``path`` (sorted, at most ``limit`` spread evenly over labels;
    ``mixed``: in a fixed mixed order instead, so every batch holds the folder's label mix: a folder
    sorted by class would otherwise give all-ok and all-defect batches that trip the gate's rate
    rule). ``purpose``: ``curated`` for a training set put together on purpose (defects enriched);
    the gate records its defect share instead of holding it to the line's bounds.

    Timestamps are synthetic but monotonic (the folder has none): one part per
    ``1 / parts_per_second`` of the line from ``start``.
    """
    if purpose not in PURPOSES:
        raise DataError(f"purpose must be one of {', '.join(PURPOSES)}, got {purpose!r}")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: not a folder (pass a folder of images, labels as sub-folder names)")
    line = line or cfg.line_ids[0]
    line_cfg = next((x for x in cfg.lines if x.id == line), None)
    if line_cfg is None:
        raise DataError(f"plant {cfg.id} has no line {line!r}; known lines: {cfg.line_ids}")
    sku = sku or cfg.sku_codes[0]
    if sku not in cfg.sku_codes:
        raise DataError(f"plant {cfg.id} has no SKU {sku!r}; known SKUs: {cfg.sku_codes}")

    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    labelled: list[tuple[Path, str]] = []
    unlabelled: list[str] = []
    for f in files:
        label = label_from_path(f.relative_to(root.parent), label_map)
        if label is None:
            unlabelled.append(str(f.relative_to(root)))
        else:
            labelled.append((f, label))
    if unlabelled:
        raise DataError(
            f"{len(unlabelled)} image(s) under {root} have no label folder (e.g. {unlabelled[0]}): "
            "put them under folders named like ok/ and defect/, or pass a label map"
        )
    if not labelled:
        raise DataError(f"{root}: no images found ({', '.join(sorted(IMAGE_SUFFIXES))})")
    if limit is not None and limit < len(labelled):
        # take every k-th file so that a slice keeps the folder's label mix
        step = len(labelled) / limit
        labelled = [labelled[int(i * step)] for i in range(limit)]
    if mixed:
        # a line makes good and bad parts mixed, not sorted by folder: a fixed shuffle (a hash of each
        # path) gives every batch the folder's label mix, and the same files land in the same batches
        labelled.sort(key=lambda fl: hashlib.sha256(str(fl[0].relative_to(root)).encode()).digest())

    _refuse_collisions(cfg.id, root, [f for f, _ in labelled])

    start = (start or datetime.now(UTC).replace(minute=0, second=0, microsecond=0)).astimezone(UTC)
    batch_size = batch_size or cfg.data.batch_size
    batches: list[BatchInfo] = []
    import pandas as pd

    for lo in range(0, len(labelled), batch_size):
        chunk = labelled[lo : lo + batch_size]
        times = [start + timedelta(seconds=(lo + i) / line_cfg.parts_per_second) for i in range(len(chunk))]
        date = times[0].strftime("%Y-%m-%d")
        blobs = [f.read_bytes() for f, _ in chunk]
        digest = content_digest(blobs)[:16]
        batch_id = f"{times[0]:%Y%m%dT%H%M%SZ}-ingest-{digest}"
        prefix = raw_batch_prefix(cfg, line, date, batch_id)
        rows: list[dict[str, Any]] = []
        for (f, label), ts, data in zip(chunk, times, blobs, strict=True):
            rel = f.relative_to(root.parent)
            part_id = _part_id(cfg.id, rel)
            key = f"{prefix}/images/{part_id}{f.suffix.lower()}"
            rows.append(
                {
                    "part_id": part_id,
                    "timestamp": ts,
                    "line": line,
                    "sku": sku,
                    "label": label,
                    "defect_type": "unknown" if label == "defect" else "none",
                    "image_key": key,
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "source": str(rel),
                }
            )
        metadata = pd.DataFrame(rows)
        metadata["timestamp"] = pd.to_datetime(metadata["timestamp"], utc=True)
        existing = _existing_batch(store, prefix, metadata, purpose)
        if existing is not None:  # these very images, labels and times: already here, nothing to write
            batches.append(existing)
            if progress:
                progress(len(chunk))
            continue
        for row, data in zip(rows, blobs, strict=True):
            put_once(store, row["image_key"], data, IMAGE_SUFFIXES[Path(row["image_key"]).suffix])
            if progress:
                progress(1)
        info = BatchInfo(
            plant=cfg.id,
            line=line,
            date=date,
            batch_id=batch_id,
            prefix=prefix,
            parts=len(chunk),
            defects=sum(1 for _, lab in chunk if lab == "defect"),
            origin="ingest",
            purpose=purpose,
            details={
                "source_folder": str(root.resolve()),
                "run_digest": digest,
                "first": times[0].isoformat(),
                "last": times[-1].isoformat(),
            },
        )
        batches.append(write_batch_tables(store, info, metadata))
    return batches


def _refuse_collisions(plant: str, root: Path, files: list[Path]) -> None:
    """Two source files that would become the same part id (names made key-safe, or the same name
    with two suffixes) are refused before anything is written: one would silently replace the other."""
    seen: dict[str, Path] = {}
    clashes = []
    for f in files:
        part_id = _part_id(plant, f.relative_to(root.parent))
        if part_id in seen:
            clashes.append(f"{seen[part_id].relative_to(root)} and {f.relative_to(root)} (both part {part_id})")
        else:
            seen[part_id] = f
    if clashes:
        raise DataError(
            f"{len(clashes)} pair(s) of files under {root} would become the same part: {'; '.join(clashes[:5])}; "
            "rename one of each pair (nothing was uploaded)"
        )


def _existing_batch(store: ObjectStore, prefix: str, metadata: Any, purpose: str) -> BatchInfo | None:
    """The complete batch already at ``prefix`` when it holds exactly ``metadata`` (same parts,
    bytes, labels, SKU and times); None when there is none yet; a refusal when it differs."""
    key = f"{prefix}/batch.json"
    if not store.exists(key):
        return None
    info = read_batch_info(store, key)
    cols = ["part_id", "sha256", "label", "sku", "line", "timestamp"]
    try:
        old = parquet_to_frame(store.get(info.metadata_key))[cols].reset_index(drop=True)
        same = old.astype(str).equals(metadata[cols].reset_index(drop=True).astype(str))
    except (KeyError, OSError, ValueError):
        same = False
    if not same or info.purpose != purpose:
        raise DataError(
            f"{prefix} already holds a batch with these images but other labels, SKU, times or purpose: "
            "raw data is write-once, so it is not overwritten (ingest with another --start, or fix the labels "
            "through review)"
        )
    return info
