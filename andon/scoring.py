"""Scoring a batch with the plant's champion: resolve ``<plant>.<task>@champion`` once per
batch (so a promotion or a rollback takes effect on the next batch), check every image like the
gate does (a bad image becomes an error row with its reason, never a crash), predict in
mini-batches, and log one row per part to the prediction log with the model version, input
checksum, uncertainty and drift features.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from andon.config import PlantConfig
from andon.data import parquet_to_frame, read_plant_batch
from andon.errors import DataError, ObjectNotFoundError
from andon.predlog import PredictionLog
from andon.registry import CHAMPION, RegistryError, alias_version, model_name
from andon.storage import ObjectStore
from andon.validation.images import image_stats_from_bytes

if TYPE_CHECKING:
    import numpy as np

EMBEDDING_DIMS = 8


@dataclass
class ScoreSummary:
    plant: str
    batch: str
    model: str
    version: int
    parts: int
    scored: int
    errors: int
    defects: int
    seconds: float
    log_keys: list[str]

    @property
    def parts_per_s(self) -> float:
        return self.scored / self.seconds if self.seconds else 0.0


@lru_cache(maxsize=8)
def _load(name: str, version: int) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Registered versions are immutable: load each one once per process."""
    from andon.training.run import load_version

    return load_version(name, version)


def resolve_champion(cfg: PlantConfig) -> tuple[str, int]:
    name = model_name(cfg.id, cfg.recipe.task)
    version = alias_version(name, CHAMPION)
    if version is None:
        raise RegistryError(f"{name} has no champion: promote a version first (`andon promote --plant {cfg.id}`)")
    return name, version


def uncertainty(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(entropy in nats, margin between the two most likely classes) per row."""
    import numpy as np

    p = np.clip(probs, 1e-9, 1.0)
    entropy = -(p * np.log(p)).sum(axis=1)
    top2 = np.sort(probs, axis=1)[:, -2:]
    return entropy, top2[:, 1] - top2[:, 0]


def score_batch(
    store: ObjectStore,
    cfg: PlantConfig,
    batch_prefix: str,
    *,
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
) -> ScoreSummary:
    import numpy as np
    import torch

    from andon.training.data import decode_grey
    from andon.training.loop import to_tensor

    t0 = time.perf_counter()
    info = read_plant_batch(store, cfg.id, batch_prefix)
    name, version = resolve_champion(cfg)
    model, arch, prep = _load(name, version)
    classes = list(arch["classes"])
    size = int(prep["size"])
    meta = parquet_to_frame(store.get(info.metadata_key))
    if meta.empty:
        raise DataError(f"{batch_prefix} is an empty batch: nothing to score")
    log = PredictionLog(store, cfg.id)
    rows: list[dict[str, Any]] = []
    good: list[tuple[dict[str, Any], np.ndarray, float]] = []
    camera = cfg.camera_for(info.line)
    for r in meta.to_dict(orient="records"):
        t_part = time.perf_counter()
        base = {
            "part_id": r["part_id"],
            "line": r.get("line", info.line),
            "sku": r.get("sku"),
            "captured_at": r.get("timestamp"),
            "object_key": r["image_key"],
            "model_name": name,
            "model_version": version,
            "model_alias": CHAMPION,
        }
        try:
            data = store.get(r["image_key"])
        except ObjectNotFoundError:
            rows.append({**base, "error": "image missing", "predicted_class": "error", "probabilities": []})
            continue
        stats = image_stats_from_bytes(r["image_key"], data)
        base.update(sha256=stats["sha256"])
        problem = stats["error"]
        if not problem and (stats["width"], stats["height"]) != (camera.resolution, camera.resolution):
            problem = f"size {stats['width']}x{stats['height']}, expected {camera.resolution}x{camera.resolution}"
        if problem:
            rows.append({**base, "error": problem, "predicted_class": "error", "probabilities": []})
            continue
        base.update(brightness=stats["brightness"], contrast=stats["contrast"], sharpness=stats["sharpness"])
        # decoded a second time on purpose: decode_grey is exactly the training preprocessing
        # (JPEGs scaled in the DCT), so scoring sees the pixels the model was trained on
        good.append((base, decode_grey(data, size), (time.perf_counter() - t_part) * 1000))
    for lo in range(0, len(good), batch_size):
        chunk = good[lo : lo + batch_size]
        t_batch = time.perf_counter()
        with torch.inference_mode():
            x = to_tensor(np.stack([g[1] for g in chunk]))
            feats = model.features(x)
            logits = model.head(feats) if hasattr(model, "head") else model(x)
            probs = torch.softmax(logits, dim=1).numpy()
        per_part_ms = (time.perf_counter() - t_batch) * 1000 / len(chunk)
        entropy, margin = uncertainty(probs)
        emb = feats[:, :EMBEDDING_DIMS].numpy()
        scored_at = datetime.now(UTC)
        for j, (base, _, prep_ms) in enumerate(chunk):
            rows.append(
                {
                    **base,
                    "scored_at": scored_at,
                    "predicted_class": classes[int(probs[j].argmax())],
                    "probabilities": probs[j].tolist(),
                    "entropy": float(entropy[j]),
                    "margin": float(margin[j]),
                    "embedding": emb[j].tolist(),
                    "latency_ms": prep_ms + per_part_ms,
                }
            )
        if progress:
            progress(len(chunk))
    now = datetime.now(UTC)
    for row in rows:
        row.setdefault("scored_at", now)
    keys = log.append(rows)
    errors = sum(1 for r in rows if r.get("error"))
    return ScoreSummary(
        plant=cfg.id,
        batch=batch_prefix,
        model=name,
        version=version,
        parts=len(meta),
        scored=len(rows) - errors,
        errors=errors,
        defects=sum(1 for r in rows if r["predicted_class"] == "defect"),
        seconds=time.perf_counter() - t0,
        log_keys=keys,
    )
