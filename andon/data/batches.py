"""Raw batches in the object store: the layout every capability reads and writes.

A raw batch is what one line produced in one stretch of time::

    <prefix>/<line>/raw/<date>/<batch-id>/images/<part-id>.<png|jpg>
    <prefix>/<line>/raw/<date>/<batch-id>/metadata.parquet   one row per part
    <prefix>/<line>/raw/<date>/<batch-id>/sensors.parquet    one row per part (synthetic plants)
    <prefix>/<line>/raw/<date>/<batch-id>/batch.json         counts, origin, generator knobs

``<prefix>`` is the plant's ``object_prefix`` (default the plant id); dates are UTC
(``YYYY-MM-DD``). Objects are written first and ``batch.json`` last, so a batch whose
``batch.json`` exists is complete. Raw batches are never modified or deleted by Andon: ingest
writes each object once (:func:`put_once`) and batch ids are content-addressed
(:func:`content_digest`).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from andon.errors import DataError
from andon.storage import ObjectStore, join_key

if TYPE_CHECKING:
    import pandas as pd

    from andon.config import PlantConfig

METADATA_COLUMNS: tuple[str, ...] = (
    "part_id",
    "timestamp",
    "line",
    "sku",
    "label",
    "defect_type",
    "image_key",
    "sha256",
    "source",
)


PURPOSES = ("production", "curated")


@dataclass(frozen=True)
class BatchInfo:
    """What ``batch.json`` records about one raw batch."""

    plant: str
    line: str
    date: str
    batch_id: str
    prefix: str
    parts: int
    defects: int
    origin: str  # "synthetic" or "ingest"
    details: dict[str, Any]
    # "production": parts as the line made them (the gate holds the defect rate to the plant's bounds);
    # "curated": a training set put together on purpose, defects enriched (recorded, not refused)
    purpose: str = "production"

    @property
    def metadata_key(self) -> str:
        return f"{self.prefix}/metadata.parquet"

    @property
    def sensors_key(self) -> str:
        return f"{self.prefix}/sensors.parquet"

    @property
    def uri_key(self) -> str:
        return f"{self.prefix}/batch.json"


def raw_batch_prefix(cfg: PlantConfig, line: str, date: str, batch_id: str) -> str:
    cfg.camera_for(line)  # raises a clear error for an unknown line
    return join_key(cfg.object_prefix, line, "raw", date, batch_id)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def frame_to_parquet(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False, engine="pyarrow")
    return buf.getvalue()


def parquet_to_frame(data: bytes) -> pd.DataFrame:
    import pandas as pd

    return pd.read_parquet(io.BytesIO(data), engine="pyarrow")


def write_batch_tables(
    store: ObjectStore,
    info: BatchInfo,
    metadata: pd.DataFrame,
    sensors: pd.DataFrame | None = None,
) -> BatchInfo:
    """Write the tables and then ``batch.json`` (the completion marker) of a batch whose images
    are already in the store."""
    missing = [c for c in METADATA_COLUMNS if c not in metadata.columns]
    if missing:
        raise DataError(f"metadata of batch {info.batch_id} lacks columns {missing}")
    store.put(info.metadata_key, frame_to_parquet(metadata), "application/vnd.apache.parquet")
    if sensors is not None:
        store.put(info.sensors_key, frame_to_parquet(sensors), "application/vnd.apache.parquet")
    body = json.dumps(asdict(info), indent=2, sort_keys=True, default=_json_default).encode()
    store.put(info.uri_key, body, "application/json")
    return BatchInfo(**json.loads(body))  # exactly what a reader of batch.json gets


def _json_default(value: Any) -> Any:
    """numpy scalars as numbers, everything else (datetimes...) as text."""
    return value.item() if hasattr(value, "item") else str(value)


def ensure_new_or_same(store: ObjectStore, prefix: str, digest: str) -> None:
    """Refuse to write into a complete raw batch made by a different run: raw data is never
    modified. The same run (same ``digest``) may rewrite its own identical objects."""
    key = f"{prefix}/batch.json"
    if not store.exists(key):
        return
    existing = read_batch_info(store, key).details.get("run_digest")
    if existing != digest:
        raise DataError(f"{prefix} already holds a different batch (raw data is never overwritten)")


def list_raw_batches(store: ObjectStore, cfg: PlantConfig, line: str | None = None) -> Iterator[BatchInfo]:
    """Complete raw batches of a plant (optionally one line), oldest first."""
    lines = [line] if line else cfg.line_ids
    for ln in lines:
        for obj in store.list(join_key(cfg.object_prefix, ln, "raw") + "/"):
            if obj.key.endswith("/batch.json"):
                yield read_batch_info(store, obj.key)


def read_plant_batch(store: ObjectStore, plant: str, prefix: str) -> BatchInfo:
    """The ``batch.json`` of a complete raw batch of ``plant``; a clear error otherwise."""
    from andon.errors import ObjectNotFoundError

    prefix = prefix.rstrip("/")
    try:
        info = read_batch_info(store, f"{prefix}/batch.json")
    except ObjectNotFoundError:
        raise DataError(f"no complete batch at {prefix} in {store.url} (batch.json missing)") from None
    if info.plant != plant:
        raise DataError(f"{prefix} belongs to plant {info.plant}, not {plant}")
    return info


def read_batch_info(store: ObjectStore, key: str) -> BatchInfo:
    """``batch.json`` as written by :func:`write_batch_tables`; anything else (not JSON, JSON nested
    too deep, a field missing or of the wrong type) is a :class:`DataError` naming the problem."""
    try:
        raw = json.loads(store.get(key))
        info = BatchInfo(**raw)
    except (ValueError, TypeError, RecursionError) as exc:
        raise DataError(f"{key}: not a valid batch.json: {str(exc)[:300]}") from None
    wrong = [
        f
        for f in ("plant", "line", "date", "batch_id", "prefix", "origin", "purpose")
        if not isinstance(getattr(info, f), str)
    ]
    wrong += [f for f in ("parts", "defects") if type(getattr(info, f)) is not int or getattr(info, f) < 0]
    wrong += [] if isinstance(info.details, dict) else ["details"]
    if wrong:
        raise DataError(f"{key}: not a valid batch.json: wrong type or value for {', '.join(wrong)}")
    if info.purpose not in PURPOSES:
        raise DataError(f"{key}: purpose {info.purpose!r} is not one of {', '.join(PURPOSES)}")
    return info


def content_digest(images: list[bytes]) -> str:
    """The id part of a batch: a digest over its images' bytes (not their names, labels or order),
    so two different sets of images never share a batch id, and the same images always do."""
    h = hashlib.sha256()
    for digest in sorted(hashlib.sha256(data).digest() for data in images):
        h.update(digest)
    return h.hexdigest()


def put_once(store: ObjectStore, key: str, data: bytes, content_type: str = "application/octet-stream") -> bool:
    """Write-once: write ``key`` if it is new (True), leave it if it holds these very bytes
    (False), refuse if it holds other bytes (raw data and evidence are never overwritten)."""
    if store.exists(key):
        if store.get(key) == data:
            return False
        raise DataError(f"{key} already holds different bytes: refusing to overwrite it (objects are write-once)")
    store.put(key, data, content_type)
    return True
