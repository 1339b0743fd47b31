"""Scoring a batch with the plant's champion: resolve ``<plant>.<task>@champion`` once per
batch (so a promotion or a rollback takes effect on the next batch), check every image like the
gate does (a bad image becomes an error row with its reason, never a crash), predict in
mini-batches, and log one row per part to the prediction log with the model version, input
checksum, uncertainty and drift features.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from andon.config import PlantConfig
from andon.data.batches import parquet_to_frame, read_plant_batch
from andon.errors import DataError, ObjectNotFoundError
from andon.lifecycle.registry import CHAMPION, RegistryError, alias_version, model_name
from andon.models.runtimes import usable_cores
from andon.scoring.predlog import PredictionLog
from andon.storage import ObjectStore
from andon.validation.images import image_stats_from_bytes

if TYPE_CHECKING:
    import numpy as np

    from andon.quality import OperatingPoint
    from andon.training.run import LoadedVersion


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
    explained: int
    seconds: float
    log_keys: list[str]

    @property
    def parts_per_s(self) -> float:
        return self.scored / self.seconds if self.seconds else 0.0


def load_cached(name: str, version: int) -> LoadedVersion:
    """Registered versions are immutable: load each one once per process and registry."""
    from andon.settings import get_settings

    return _load_cached(name, version, get_settings().mlflow_tracking_uri)


@lru_cache(maxsize=8)
def _load_cached(name: str, version: int, registry: str) -> LoadedVersion:
    from andon.training.run import load_version

    return load_version(name, version)


def load_fast(name: str, version: int) -> LoadedVersion:
    """The registered version folded for CPU inference (same function, about twice as fast)."""
    from andon.settings import get_settings

    return _load_fast_cached(name, version, get_settings().mlflow_tracking_uri)


@lru_cache(maxsize=8)
def _load_fast_cached(name: str, version: int, registry: str) -> LoadedVersion:
    from dataclasses import replace

    from andon.models import optimize_for_inference

    loaded = load_cached(name, version)
    return replace(loaded, model=optimize_for_inference(loaded.model))


def pick_runner(cfg: PlantConfig, name: str, version: int, threads: int = 0) -> Any:
    """The first runtime of ``inference.runtimes`` that the gate verified for the version and that
    loads here (andon/models/runtimes.py); None (torch) when none does. Cached per version.
    ``threads``: the runtime's threads per call (0: one per core)."""
    from andon.settings import get_settings

    preference = cfg.recipe.inference.runtimes
    return _pick_runner_cached(preference, name, version, get_settings().mlflow_tracking_uri, threads)


@lru_cache(maxsize=8)
def _pick_runner_cached(preference: tuple[str, ...], name: str, version: int, registry: str, threads: int) -> Any:
    import logging

    from andon.errors import IntegrityError
    from andon.models.runtimes import VERIFIED_TAG, RuntimeUnavailable

    loaded = load_cached(name, version)
    verified = set(loaded.lineage.get(VERIFIED_TAG, "").split(","))
    log = logging.getLogger(__name__)
    for runtime in preference:
        if runtime == "torch":
            return None
        if runtime not in verified:
            continue
        try:
            return loaded.runner(runtime, threads=threads)
        except (RuntimeUnavailable, IntegrityError) as exc:
            log.warning("%s v%d: runtime %s not used: %s", name, version, runtime, exc)
    return None


def resolve_champion(cfg: PlantConfig, task: str | None = None) -> tuple[str, int]:
    name = model_name(cfg.id, task or cfg.recipe.task)
    version = alias_version(name, CHAMPION)
    if version is None:
        how = (
            f"`andon promote --plant {cfg.id}`"
            if name == cfg.registered_model_name
            else "set its `champion` alias in the MLflow registry (`andon promote` covers the vision task so far)"
        )
        raise RegistryError(f"{name} has no champion: promote a version first ({how})")
    return name, version


@dataclass
class Champion:
    """The serving model of a plant, resolved once (per batch, or per reload in the service)."""

    name: str
    version: int
    model: Any
    classes: list[str]
    size: int
    operating_point: OperatingPoint
    transform: str = "resize"
    runner: Any = None  # andon/models/runtimes.py; None: the torch network ``model``

    @classmethod
    def load(cls, cfg: PlantConfig, threads: int = 0) -> Champion:
        """``threads``: the runtime's threads per call (0: one per core; :func:`score_batch` runs
        one call per core at once, each on one thread)."""
        name, version = resolve_champion(cfg)
        loaded = load_fast(name, version)
        return cls(
            name, version, loaded.model, list(loaded.classes), loaded.size, loaded.operating_point, loaded.transform,
            runner=pick_runner(cfg, name, version, threads),
        )  # fmt: skip

    @property
    def runtime(self) -> str:
        return str(self.runner.name) if self.runner is not None else "torch"

    def model_input(self, data: bytes) -> np.ndarray:
        """The image as this version saw its training images (andon/imaging.py, the one transform)."""
        from andon.imaging import model_input

        return model_input(data, self.size, self.transform)

    @property
    def threshold(self) -> float:
        return self.operating_point.threshold

    def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``uint8 (N, size, size)`` -> (probabilities ``(N, classes)``, embeddings ``(N, 8)``)."""
        from andon.models.runtimes import TorchRunner

        if self.runner is not None:
            try:
                return self.runner.run(images)
            except Exception as exc:  # the gate ran it on the golden set; still, a part is never lost to it
                import logging

                logging.getLogger(__name__).error(
                    "%s v%d: runtime %s failed (%s); torch serves from now on", self.name, self.version,
                    self.runtime, exc,
                )  # fmt: skip
                self.runner = None
        return TorchRunner(self.model).run(images)


def uncertainty(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(entropy in nats, margin between the two most likely classes) per row."""
    import numpy as np

    p = np.clip(probs, 1e-9, 1.0)
    entropy = -(p * np.log(p)).sum(axis=1)
    top2 = np.sort(probs, axis=1)[:, -2:]
    return entropy, top2[:, 1] - top2[:, 0]


def check_image(key: str, data: bytes, cfg: PlantConfig, line: str) -> tuple[dict[str, Any], str | None]:
    """The gate's per-image rules for one part (``camera_image_rules``: a camera format that
    decodes, the camera's size and colour mode): (log fields from the image, problem or None).
    A header over the camera's largest side is refused before any pixel is decoded."""
    fields, problem, _ = inspect_image(key, data, cfg, line)
    return fields, problem


def inspect_image(
    key: str, data: bytes, cfg: PlantConfig, line: str, champion: Champion | None = None
) -> tuple[dict[str, Any], str | None, np.ndarray | None]:
    """:func:`check_image`, and for an image that passes, ``champion``'s model input: a PNG or BMP
    is decoded once for both, a JPEG a second time (scaled in the DCT, exactly as in training)."""
    from andon.imaging import grey_model_input, size_problem
    from andon.validation.images import camera_image_rules

    rules = camera_image_rules(cfg.camera_for(line))
    grey: list[Any] = []
    stats = image_stats_from_bytes(
        key, data, max_side=rules["size"][1], on_grey=grey.append if champion is not None else None
    )
    fields: dict[str, Any] = {"sha256": stats["sha256"]}
    problem = stats["error"]
    if not problem:
        problem = size_problem(stats["width"], stats["height"], rules["size"])
    if not problem and rules["mode"] is not None and stats["mode"] != rules["mode"]:
        problem = f"colour mode {stats['mode']}, expected {rules['mode']} (what the camera writes)"
    if problem:
        return fields, problem, None
    fields.update(brightness=stats["brightness"], contrast=stats["contrast"], sharpness=stats["sharpness"])
    if champion is None:
        return fields, None, None
    image = grey_model_input(grey[0], champion.size, champion.transform) if grey else champion.model_input(data)
    return fields, None, image


def error_fields(problem: str) -> dict[str, Any]:
    return {"error": problem, "predicted_class": "error", "probabilities": []}


def prediction_rows(classes: list[str], probs: np.ndarray, emb: np.ndarray, threshold: float) -> list[dict[str, Any]]:
    """The prediction part of a log row, one per image: the decision at the version's operating
    point (``threshold`` on the defect score), never the argmax."""
    from andon.quality import decide, defect_scores

    entropy, margin = uncertainty(probs)
    decided = decide(probs, threshold, classes)
    columns = zip(  # whole arrays to Python at once: per-element conversion cost more than the forward pass
        decided, probs.tolist(), defect_scores(probs).tolist(), entropy.tolist(), margin.tolist(), emb.tolist(),
        strict=True,
    )  # fmt: skip
    t = float(threshold)
    return [
        {"predicted_class": c, "probabilities": p, "defect_score": s, "threshold": t, "entropy": h, "margin": m,
         "embedding": e}
        for c, p, s, h, m, e in columns
    ]  # fmt: skip


def wants_explanation(cfg: PlantConfig, part_id: str, predicted_class: str) -> bool:
    """Every flagged part (any class but the first, the pass class) and a sample of passes,
    chosen by a hash of the part id so a rerun explains the same parts."""
    if predicted_class == "error":
        return False
    if predicted_class != cfg.recipe.classes[0]:
        return True
    share = cfg.recipe.explain.pass_sample
    return share > 0 and int(hashlib.sha256(part_id.encode()).hexdigest()[:8], 16) < share * 0xFFFFFFFF


def explain_parts(
    store: ObjectStore, cfg: PlantConfig, champion: Champion, images: np.ndarray, rows: list[dict[str, Any]]
) -> None:
    """Saliency maps for ``rows`` (already predicted; ``images`` aligned with them): an overlay PNG
    per part in the store, and ``explanation_key / _method / _top`` filled in on each row."""
    import json

    import numpy as np

    from andon.explain.maps import explanation_key, method_for, overlay_png, saliency, top_regions
    from andon.training.loop import to_tensor

    if not rows:
        return
    spec = cfg.recipe.explain
    method = method_for(champion.model, spec.method)
    targets = [champion.classes.index(r["predicted_class"]) for r in rows]
    maps = np.zeros((len(rows), champion.size, champion.size), np.float32)
    for t in sorted(set(targets)):
        idx = [i for i, tt in enumerate(targets) if tt == t]
        maps[idx] = saliency(champion.model, to_tensor(images[idx]), t, method)
    for i, row in enumerate(rows):
        when = row.get("scored_at") or datetime.now(UTC)
        key = explanation_key(cfg.id, when, str(row["part_id"]), model=champion.name, version=champion.version)
        p = max(row["probabilities"])
        caption = f"{row['part_id']}  {row['predicted_class']} {p:.2f}  {champion.name} v{champion.version}"
        key = _put_evidence(store, key, overlay_png(images[i], maps[i], caption=caption))
        row.update(
            explanation_key=key,
            explanation_method=method,
            explanation_top=json.dumps(top_regions(maps[i], k=spec.top_regions)),
        )


def _put_evidence(store: ObjectStore, key: str, data: bytes) -> str:
    """Write an overlay once; a key already holding other bytes (the same part twice in one
    scoring instant) gets a numbered sibling, never an overwrite. Returns the key written."""
    from andon.data.batches import put_once

    stem, dot, suffix = key.rpartition(".")
    for n in range(1, 100):
        candidate = key if n == 1 else f"{stem}-{n}{dot}{suffix}"
        try:
            put_once(store, candidate, data, "image/png")
            return candidate
        except DataError:
            continue
    raise DataError(f"{key}: 99 overlays of one part at one instant; refusing to write more")


def require_accepted(store: ObjectStore, cfg: PlantConfig, batch_prefix: str) -> dict[str, Any]:
    """The gate's ``accepted`` verdict of this very batch, else a clear refusal: no batch reaches
    scoring without passing the gate (a quarantined or never validated batch is not scored)."""
    from andon.validation.gate import verdict_of

    prefix = batch_prefix.strip("/")
    verdict = verdict_of(store, cfg, prefix)
    if verdict is None:
        raise DataError(
            f"{prefix} was never validated: no batch is scored before the data gate accepts it "
            f"(run `andon validate --plant {cfg.id} {prefix}` first)"
        )
    if verdict.get("verdict") != "accepted":
        failed = "; ".join(str(r) for r in (verdict.get("failed_rules") or [])[:3]) or "see its report"
        raise DataError(
            f"{prefix} was quarantined by the data gate at {verdict.get('validated_at')} ({failed}): "
            f"it is not scored; the report is at {verdict.get('report_key')}"
        )
    return verdict


def score_batch(
    store: ObjectStore,
    cfg: PlantConfig,
    batch_prefix: str,
    *,
    batch_size: int = 64,
    explain: bool = True,
    progress: Callable[[int], None] | None = None,
    gated: bool = False,
    workers: int = 0,
) -> ScoreSummary:
    """Score one raw batch; with ``explain`` (the default) flagged parts get a saliency map.
    ``gated``: refuse a batch the data gate has not accepted (:func:`require_accepted`; what
    ``andon score`` does). ``workers``: threads that each fetch, check, decode and predict a
    window of ``batch_size`` parts, the runtime on ``cores // workers`` threads per call (0: one
    worker per core, at most 8): cores that each run whole windows never wait for each other,
    where one runtime call spread over all cores waits for its slowest thread while the others
    decode (docs/scoring.md has the measured figures)."""
    import numpy as np

    t0 = time.perf_counter()
    if gated:
        require_accepted(store, cfg, batch_prefix)
    info = read_plant_batch(store, cfg.id, batch_prefix)
    cores = usable_cores()
    workers = workers or min(cores, 8)
    champion = Champion.load(cfg, threads=max(1, cores // workers))
    meta = parquet_to_frame(store.get(info.metadata_key))
    if meta.empty:
        raise DataError(f"{batch_prefix} is an empty batch: nothing to score")
    log = PredictionLog(store, cfg.id)
    rows: list[dict[str, Any]] = []

    def prepare(r: dict[str, Any]) -> tuple[dict[str, Any], np.ndarray | None, float]:
        """Fetch, check and decode one part: (its log fields, its model input or None with the
        error in the fields, ms spent)."""
        t_part = time.perf_counter()
        line = str(r.get("line") or info.line)
        base = {
            "part_id": r["part_id"],
            "line": line,
            "sku": r.get("sku"),
            "captured_at": r.get("timestamp"),
            "object_key": r["image_key"],
            "model_name": champion.name,
            "model_version": champion.version,
            "model_alias": CHAMPION,
        }
        try:
            data = store.get(r["image_key"])
        except ObjectNotFoundError:
            return {**base, **error_fields("image missing")}, None, 0.0
        fields, problem, image = inspect_image(r["image_key"], data, cfg, line, champion)
        base.update(fields)
        if problem:
            return {**base, **error_fields(problem)}, None, 0.0
        return base, image, (time.perf_counter() - t_part) * 1000

    def window(records: list[dict[str, Any]]) -> _Window:
        """One window on a worker thread (Pillow, the store and the runtimes release the GIL)."""
        prepared = [prepare(r) for r in records]
        chunk = [(fields, image, ms) for fields, image, ms in prepared if image is not None]
        errors = [fields for fields, image, _ in prepared if image is None]
        if not chunk:
            return _Window(len(prepared), errors, chunk, None, None, None, 0.0)
        t_batch = time.perf_counter()
        images = np.stack([g[1] for g in chunk])
        probs, emb = champion.predict(images)
        per_part_ms = (time.perf_counter() - t_batch) * 1000 / len(chunk)
        return _Window(len(prepared), errors, chunk, images, probs, emb, per_part_ms)

    records = meta.to_dict(orient="records")
    windows = [records[lo : lo + batch_size] for lo in range(0, len(records), batch_size)]
    explained = 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        # in order, at most two windows per worker in flight (bounded memory); rows are built and
        # parts explained here while the workers go on
        ahead = 2 * workers
        pending = [pool.submit(window, w) for w in windows[:ahead]]
        for k in range(len(windows)):
            done = pending.pop(0).result()
            if k + ahead < len(windows):
                pending.append(pool.submit(window, windows[k + ahead]))
            rows += done.errors
            if done.chunk:
                explained += _add_predictions(store, cfg, champion, done, rows, explain)
            if progress:
                progress(done.parts)
    now = datetime.now(UTC)
    for row in rows:
        row.setdefault("scored_at", now)
    keys = log.append(rows)
    errors = sum(1 for r in rows if r.get("error"))
    return ScoreSummary(
        plant=cfg.id,
        batch=batch_prefix,
        model=champion.name,
        version=champion.version,
        parts=len(meta),
        scored=len(rows) - errors,
        errors=errors,
        defects=sum(1 for r in rows if r["predicted_class"] not in ("error", cfg.recipe.classes[0])),
        explained=explained,
        seconds=time.perf_counter() - t0,
        log_keys=keys,
    )


@dataclass
class _Window:
    """One window of a batch, checked, decoded and predicted on a worker thread."""

    parts: int
    errors: list[dict[str, Any]]  # the log rows of parts that failed a check
    chunk: list[tuple[dict[str, Any], Any, float]]  # (log fields, model input, ms to prepare) per part
    images: np.ndarray | None
    probs: np.ndarray | None
    emb: np.ndarray | None
    per_part_ms: float


def _add_predictions(
    store: ObjectStore, cfg: PlantConfig, champion: Champion, w: _Window, rows: list[dict[str, Any]], explain: bool
) -> int:
    """Add one predicted window's rows to ``rows`` and explain what :func:`wants_explanation`
    picks; returns how many were explained."""
    assert w.images is not None and w.probs is not None and w.emb is not None
    scored_at = datetime.now(UTC)
    chunk_rows = [
        {**base, **pred, "scored_at": scored_at, "latency_ms": prep_ms + w.per_part_ms}
        for (base, _, prep_ms), pred in zip(
            w.chunk, prediction_rows(champion.classes, w.probs, w.emb, champion.threshold), strict=True
        )
    ]
    explained = 0
    if explain:
        pick = [i for i, r in enumerate(chunk_rows) if wants_explanation(cfg, r["part_id"], r["predicted_class"])]
        explain_parts(store, cfg, champion, w.images[pick], [chunk_rows[i] for i in pick])
        explained = len(pick)
    rows += chunk_rows
    return explained
