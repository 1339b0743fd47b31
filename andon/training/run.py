"""Train one model version for a plant: the callable that the ``train`` flow, ``andon train``
and ``andon models reproduce`` all run.

Data comes from dataset manifests only (content-addressed, validated); the held-out split is a
function of each object's key; everything that shaped the model (resolved recipe, data
checksum, code commit, config checksum, parent version) is recorded in MLflow, and the version
is registered as ``<plant>.<task>`` with alias ``challenger``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from andon.config import PlantConfig, Recipe
from andon.data.datasets import combine, load_manifest, require_usable
from andon.errors import DataError, IntegrityError
from andon.lifecycle.registry import CHALLENGER, code_state, model_name, register_version, set_alias
from andon.models.runtimes import sha256_of
from andon.monitoring.reference import build_reference
from andon.quality import (
    OperatingPoint,
    choose_operating_point,
    decide,
    defect_scores,
    fmt_rate,
    overkill_at_target,
)
from andon.storage import ObjectStore
from andon.training.augment import build_augmentations
from andon.training.data import ImageCache, load_split, split_objects
from andon.training.evaluate import classification_metrics, confusion_png, frontier_png, worst_errors_png
from andon.training.loop import PREPROCESSING, EpochLog, FitResult, fit, predict, seed_everything, to_tensor

logger = logging.getLogger(__name__)  # a flow run's Logs tab shows it (PREFECT_LOGGING_EXTRA_LOGGERS=andon)

# Lineage of what a version decides with: recorded as run and version tags at training, verified
# before every load (a file swapped in the artifact store is refused, never loaded).
WEIGHTS_TAG = "weights.sha256"  # andon/state_dict.pt
SPECS_TAG = "specs.sha256"  # the files that shape decisions besides the weights
SPEC_FILES = ("architecture.json", "preprocessing.json", "operating_point.json")


@dataclass
class TrainOutcome:
    model_name: str
    version: int | None
    run_id: str
    manifest_id: str
    metrics: dict[str, float]
    best_epoch: int
    epochs_run: int
    seconds: float
    images_per_s: float
    history: list[dict[str, float]] = field(default_factory=list)
    operating_point: dict[str, Any] = field(default_factory=dict)
    model_uri: str = ""  # the logged model (registering a run later: ``register_run``)
    model_id: str = ""
    tags: dict[str, str] = field(default_factory=dict)  # the lineage the version is registered with


def flatten(prefix: str, value: Any, out: dict[str, str]) -> dict[str, str]:
    """Nested recipe -> MLflow params (``training.epochs`` = ``8``)."""
    if isinstance(value, dict):
        for k, v in value.items():
            flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, list | tuple) and value and isinstance(value[0], dict):
        for i, v in enumerate(value):
            flatten(f"{prefix}.{i}", v, out)
    else:
        out[prefix] = json.dumps(value) if isinstance(value, list | tuple | dict) else str(value)
    return out


def architecture_spec(recipe: Recipe, num_classes: int, model: Any = None) -> dict[str, Any]:
    """What ``andon.models.build_from_arch`` rebuilds the network from (weights come separately)."""
    spec: dict[str, Any] = {
        "name": recipe.model.name,
        "width": recipe.model.width,
        "in_channels": recipe.image.channels,
        "num_classes": num_classes,
        "classes": list(recipe.classes),
    }
    if recipe.kind != "classifier":
        memory = (model.anomaly if recipe.kind == "both" else model).memory
        spec |= {
            "name": "either" if recipe.kind == "both" else "patchcore",
            "backbone": recipe.model.name,
            "feat_dim": int(memory.shape[1]),
            "memory_size": int(memory.shape[0]),
            "strides": list(recipe.anomaly.strides),
        }
    return spec


def preprocessing_spec(recipe: Recipe) -> dict[str, Any]:
    return {"size": recipe.image.size, "transform": recipe.image.transform, **PREPROCESSING}


def resolve_dataset(store: ObjectStore, plant: str, manifest_ids: list[str]) -> tuple[str, list[dict[str, Any]]]:
    if not manifest_ids:
        raise DataError("give at least one dataset id (see `andon datasets list --plant ...`)")
    if len(manifest_ids) == 1:
        m = require_usable(store, load_manifest(store, plant, manifest_ids[0]))
    else:
        m = combine(store, plant, manifest_ids)
    return m.id, m.objects


def latency_ms(model: Any, images: Any, rounds: int = 5, per_round: int = 20) -> float:
    """Single-part inference time as the model's own cost: the median of ``per_round`` one-image
    calls, the best of ``rounds`` rounds, on one thread. Other work on the machine can only make a
    round slower, so the best round is what the model costs when it has a core (a p95 measured
    under load was 60x this), and the gate's decision does not depend on how busy the machine is.
    ``model``: an ``nn.Module`` or any callable on a ``(1, 1, H, W)`` tensor."""
    import numpy as np
    import torch

    if len(images) == 0:
        return 0.0
    if hasattr(model, "eval"):
        model.eval()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    best = float("inf")
    try:
        with torch.inference_mode():
            model(to_tensor(images[:1]))  # warm-up: first-call allocations are not the model's cost
            for _ in range(rounds):
                times = []
                for img in images[:per_round]:
                    t0 = time.perf_counter()
                    model(to_tensor(img[None]))
                    times.append((time.perf_counter() - t0) * 1000)
                best = min(best, float(np.median(times)))
    finally:
        torch.set_num_threads(threads)
    return best


def quality_objective(max_escape_rate: float) -> Callable[[Any, Any], float]:
    """The checkpoint objective: minus the overkill rate at the plant's escape target on the
    validation split (validation accuracy favours all-ok models on imbalanced data)."""

    def objective(probs: Any, labels: Any) -> float:
        return -overkill_at_target(defect_scores(probs), labels != 0, max_escape_rate)

    return objective


def operating_point_for(cfg: PlantConfig, recipe: Recipe, probs: Any, labels: Any, split: str) -> OperatingPoint:
    """The version's operating point on ``split`` (``probs``, ``labels``): pinned by the recipe; for
    an anomaly model the threshold fitted on the split's good parts (a defect probability of 0.5 by
    construction); else chosen to meet the plant's escape target with the least overkill."""
    from andon.quality import rates_at

    scores = defect_scores(probs)
    chosen_on = f"{split} split ({len(labels)} parts, {int((labels != 0).sum())} defects)"
    pinned = recipe.thresholds.defect_probability
    if pinned is not None:
        rates = rates_at(scores, labels != 0, pinned, cfg.quality.confidence)
        return OperatingPoint(pinned, "defect_probability", cfg.quality.max_escape_rate, chosen_on, rates.metrics(),
                              True, pinned=True)  # fmt: skip
    if recipe.kind == "anomaly":
        rates = rates_at(scores, labels != 0, 0.5, cfg.quality.confidence)
        where = f"good parts of the {split} split ({int((labels == 0).sum())}), overkill budget"
        where += f" {cfg.quality.max_overkill_rate:.1%}"
        return OperatingPoint(0.5, "anomaly_score", cfg.quality.max_escape_rate, where, rates.metrics(), True)
    return choose_operating_point(
        scores,
        labels != 0,
        cfg.quality.max_escape_rate,
        confidence=cfg.quality.confidence,
        chosen_on=chosen_on,
        max_overkill_rate=cfg.quality.max_overkill_rate,
    )


def anomaly_backbone(store: ObjectStore, recipe: Recipe, model: Any) -> Any:
    """The backbone of an anomaly model (``recipe.anomaly.backbone``): the fleet's central champion,
    a weights file from the object store (its sha256 checked), or ``model`` as initialised."""
    import hashlib
    import io

    import torch

    spec = recipe.anomaly
    if spec.backbone == "central":
        from andon.lifecycle.registry import compatible_central

        parent = compatible_central(recipe, "the recipe's anomaly backbone")
        model.load_state_dict(load_state_dict(*parent))
    elif spec.backbone == "file":
        assert spec.backbone_file and spec.backbone_sha256  # the config validator requires both
        data = store.get(spec.backbone_file)
        actual = hashlib.sha256(data).hexdigest()
        if actual != spec.backbone_sha256:
            raise DataError(
                f"{spec.backbone_file}: sha256 {actual[:12]} is not the configured {spec.backbone_sha256[:12]}: "
                "refusing a backbone file that changed"
            )
        model.load_state_dict(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))
    return model.eval()


def fit_anomaly(cfg: PlantConfig, recipe: Recipe, backbone: Any, train: Any, val: Any) -> tuple[Any, dict[str, Any]]:
    """The anomaly model over ``backbone`` (kind ``anomaly``), or the classifier ``backbone`` and
    its anomaly model decided as one (kind ``both``): memory bank from the training split's good
    parts, threshold from the validation split's good parts at the plant's overkill budget (its
    ``overkill_share`` of it for ``both``, which leaves the rest to the classifier)."""
    from andon.models import either_model
    from andon.training.anomaly import anomaly_scores, calibrate, fit_patchcore

    spec = recipe.anomaly
    good = train.images[train.labels == 0][: spec.max_train_images]
    patchcore = fit_patchcore(
        backbone.eval(), good, memory_size=spec.memory_size, seed=recipe.training.seed, strides=spec.strides
    )
    budget = cfg.quality.max_overkill_rate * (spec.overkill_share if recipe.kind == "both" else 1.0)
    fitted = calibrate(patchcore, anomaly_scores(patchcore, val.images[val.labels == 0]), budget)
    fitted |= {"memory_size": int(patchcore.memory.shape[0]), "bank_from_good_parts": len(good)}
    return (patchcore if recipe.kind == "anomaly" else either_model(backbone, patchcore)).eval(), fitted


def train_plant(
    store: ObjectStore,
    cfg: PlantConfig,
    manifest_ids: list[str],
    *,
    recipe: Recipe | None = None,
    parent: tuple[str, int] | None = None,
    cache_dir: Path | None = None,
    register: bool = True,
    on_epoch: Callable[[EpochLog], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
    extra_tags: dict[str, str] | None = None,
) -> TrainOutcome:
    """Train, evaluate on the held-out split, log everything to MLflow and register a challenger."""
    import mlflow
    import numpy as np
    import pandas as pd
    import torch

    from andon.lifecycle.registry import ensure_experiment, use_tracking_server
    from andon.models import build_model
    from andon.settings import get_settings

    use_tracking_server()
    recipe = recipe or cfg.recipe
    t_start = time.perf_counter()
    manifest_id, objects = resolve_dataset(store, cfg.id, manifest_ids)
    labels = sorted({str(o["label"]) for o in objects})
    if len(labels) < 2:
        raise DataError(f"dataset {manifest_id[:12]} has one class only ({labels}); a classifier needs both")
    tr = recipe.training
    splits = split_objects(objects, tr.seed, tr.val_fraction, tr.test_fraction)
    empty = [s for s, objs in splits.items() if not objs]
    if empty:
        raise DataError(
            f"dataset {manifest_id[:12]} ({len(objects)} objects) leaves the {', '.join(empty)} split empty"
        )
    cache = ImageCache(cache_dir or get_settings().home / "cache" / "images")
    size = recipe.image.size
    sets = {
        s: load_split(store, objs, recipe.classes, size, cache, transform=recipe.image.transform)
        for s, objs in splits.items()
    }

    seed_everything(tr.seed)
    model = build_model(recipe.model.name, recipe.image.channels, len(recipe.classes), recipe.model.width)
    parent_version = ""
    if parent is not None:
        model.load_state_dict(load_state_dict(*parent))
        parent_version = f"{parent[0]}/{parent[1]}"
    elif recipe.kind == "anomaly":
        model = anomaly_backbone(store, recipe, model)

    name = model_name(cfg.id, recipe.task)
    commit, dirty = code_state()
    tags = {
        "data.manifest_sha256": manifest_id,
        "code.commit": commit,
        "code.dirty": str(dirty).lower(),
        "config.sha256": cfg.sha256(),
        "recipe": recipe.name,
        "plant": cfg.id,
        "parent_version": parent_version,
        "seed": str(tr.seed),
        **(extra_tags or {}),
    }
    mlflow.set_experiment(experiment_id=ensure_experiment(name))
    nested = mlflow.active_run() is not None  # e.g. a candidate of `andon tune`: a child run
    with (
        mlflow.start_run(run_name=f"{cfg.id}-{recipe.name}", nested=nested) as run,
        tempfile.TemporaryDirectory() as tmp_dir,
    ):
        tmp = Path(tmp_dir)
        mlflow.set_tags(tags)
        mlflow.log_params(flatten("", recipe.model_dump(mode="json"), {}))
        ds = mlflow.data.from_pandas(  # type: ignore[attr-defined]
            # MLflow caps digests at 36 characters; the full sha256 is the data.manifest_sha256 tag
            pd.DataFrame(objects)[["key", "sha256", "label"]],
            name=f"{cfg.id}:{manifest_id[:12]}",
            digest=manifest_id[:36],
        )
        mlflow.log_input(ds, context="training")
        mlflow.log_params(
            {"data.train": len(sets["train"]), "data.val": len(sets["val"]), "data.test": len(sets["test"])}
        )

        def epoch_logged(log: EpochLog) -> None:
            mlflow.log_metrics(
                {
                    "train_loss": log.train_loss,
                    "val_loss": log.val_loss,
                    "val_overkill_at_target": -log.val_objective,
                    "val_accuracy": log.val_accuracy,
                    "epoch_seconds": log.seconds,
                    "train_images_per_s": log.images_per_s,
                },
                step=log.epoch,
            )
            logger.info(
                "%s epoch %d/%d: train loss %.4f, val loss %.4f, val overkill at the escape target %.1f %% (%.0f s)",
                cfg.id, log.epoch, tr.epochs, log.train_loss, log.val_loss, -100 * log.val_objective, log.seconds,
            )  # fmt: skip
            if on_epoch:
                on_epoch(log)

        result = FitResult(best_epoch=0, best_state={})
        if recipe.kind != "anomaly":  # an anomaly model learns nothing by gradient: its backbone is given
            augment = build_augmentations(recipe.augmentations, tr.seed)
            result = fit(
                model, sets["train"], sets["val"], tr, augment, on_epoch=epoch_logged, on_batch=on_batch,
                objective=quality_objective(cfg.quality.max_escape_rate),
            )  # fmt: skip
        if recipe.kind != "classifier":
            model, fitted = fit_anomaly(cfg, recipe, model, sets["train"], sets["val"])
            mlflow.log_params({f"anomaly.{k}": v for k, v in fitted.items()})
        val_probs = predict(model, sets["val"].images)
        op = operating_point_for(cfg, recipe, val_probs, sets["val"].labels, "validation")
        test = sets["test"]
        probs = predict(model, test.images)
        metrics = classification_metrics(probs, test.labels, recipe.classes, op.threshold, cfg.quality.confidence)
        metrics["latency_ms"] = latency_ms(model, test.images)
        metrics["best_epoch"] = float(result.best_epoch)
        mlflow.log_metrics({f"test_{k}": v for k, v in metrics.items()})
        mlflow.log_metrics({f"val_{k}": v for k, v in (op.validation or {}).items()})
        op_tags = {"operating_point.threshold": f"{op.threshold:.6g}", "operating_point.score": op.score}
        mlflow.set_tags(op_tags)
        tags.update(op_tags)

        andon_dir = tmp / "andon"
        andon_dir.mkdir()
        torch.save(model.state_dict(), andon_dir / "state_dict.pt")
        (andon_dir / "architecture.json").write_text(
            json.dumps(architecture_spec(recipe, len(recipe.classes), model), indent=1)
        )
        (andon_dir / "preprocessing.json").write_text(json.dumps(preprocessing_spec(recipe), indent=1))
        (andon_dir / "recipe.json").write_text(recipe.model_dump_json(indent=1))
        (andon_dir / "split.json").write_text(json.dumps({s: [o["key"] for o in objs] for s, objs in splits.items()}))
        (andon_dir / "environment.json").write_text(json.dumps(environment(), indent=1))
        (andon_dir / "operating_point.json").write_text(json.dumps(op.as_dict(), indent=1))
        scores = defect_scores(probs)
        index = {c: i for i, c in enumerate(recipe.classes)}
        preds = np.array([index[c] for c in decide(probs, op.threshold, recipe.classes)])
        title = f"{name} test: escape {fmt_rate(metrics['escape_rate'])}, overkill {fmt_rate(metrics['overkill_rate'])}"
        confusion_png(test.labels, preds, recipe.classes, andon_dir / "confusion_matrix.png", title)
        frontier_png(
            scores, test.labels, op.threshold, andon_dir / "escape_overkill.png", title,
            cfg.quality.max_escape_rate, cfg.quality.max_overkill_rate,
        )  # fmt: skip
        worst_errors_png(test.images, test.labels, scores, op.threshold, recipe.classes, andon_dir / "worst_errors.png")
        # what monitoring compares production against: the validation split's features and predictions
        reference, ref_frame = build_reference(store, cache, model, recipe, sets["val"], name, threshold=op.threshold)
        (andon_dir / "reference.json").write_text(reference.to_json())
        ref_frame.to_parquet(andon_dir / "reference.parquet")
        example = to_tensor(test.images[:2]).numpy()
        if recipe.inference.export:
            inference_tags = export_inference(model, recipe, andon_dir, test.images[:2], sets["train"].images)
            mlflow.set_tags(inference_tags)
            tags.update(inference_tags)
        info, version = log_version(name, model, andon_dir, tags, example, run.info.run_id, register)
    epochs = len(result.history)
    logger.info(
        "%s: %s at its operating point (held-out test): escape %.1f %%, overkill %.1f %% on %d defects",
        name, f"v{version} registered as challenger" if version else "trained (not registered)",
        100 * metrics["escape_rate"], 100 * metrics["overkill_rate"], int(metrics["defects"]),
    )  # fmt: skip
    return TrainOutcome(
        model_name=name,
        version=version,
        run_id=run.info.run_id,
        manifest_id=manifest_id,
        metrics=metrics,
        best_epoch=result.best_epoch,
        epochs_run=epochs,
        seconds=time.perf_counter() - t_start,
        images_per_s=float(np.mean([h.images_per_s for h in result.history])) if epochs else 0.0,
        history=[h.__dict__ for h in result.history],
        operating_point=op.as_dict(),
        model_uri=info.model_uri,
        model_id=str(info.model_id or ""),
        tags=tags,
    )


def export_inference(model: Any, recipe: Recipe, folder: Path, example: Any, train_images: Any) -> dict[str, str]:
    """The version's inference files under ``folder/inference/`` (andon/models/runtimes.py): ONNX,
    and (``inference.quantize``) int8 calibrated on the first training images; returns their sha256
    as lineage tags. A network the exporter cannot take is logged and served by torch."""
    from andon.models import runtimes

    out = folder / runtimes.FOLDER
    try:
        tags = {runtimes.FILE_TAGS[runtimes.FP32_FILE]: runtimes.export_onnx(model, example, out / runtimes.FP32_FILE)}
        if recipe.inference.quantize:
            calibration = train_images[: recipe.inference.calibration_images]
            sha = runtimes.quantize_int8(out / runtimes.FP32_FILE, out / runtimes.INT8_FILE, calibration)
            tags[runtimes.FILE_TAGS[runtimes.INT8_FILE]] = sha
    except Exception as exc:  # the exporter and quantizer raise many kinds; torch still serves the version
        logger.warning("%s: not exported for the inference runtimes (%s); torch serves it", recipe.name, exc)
        for f in out.glob("*"):
            f.unlink()
        return {}
    return tags


def register_run(outcome: TrainOutcome) -> int:
    """Register a run trained with ``register=False`` (a tune candidate) as the challenger."""
    version = register_version(
        outcome.model_name, outcome.model_uri, outcome.run_id, outcome.tags, model_id=outcome.model_id or None
    )
    set_alias(outcome.model_name, CHALLENGER, version)
    return version


def environment() -> dict[str, str]:
    from importlib.metadata import version

    pkgs = ("torch", "torchvision", "albumentations", "mlflow", "numpy", "pandas", "scikit-learn", "pillow")
    env = {"python": platform.python_version(), "platform": platform.platform()}
    for p in pkgs:
        try:
            env[p] = version(p)
        except Exception:  # a missing optional package is just not listed
            continue
    return env


def _specs_sha256(folder: Path) -> str:
    lines = [f"{name} {sha256_of(folder / name)}" for name in SPEC_FILES if (folder / name).exists()]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def log_version(
    name: str, model: Any, folder: Path, tags: dict[str, str], example: Any, run_id: str, register: bool
) -> tuple[Any, int | None]:
    """The one way a trained model becomes a version (vision and sensor alike), inside its MLflow
    run: the sha256 of its artifacts as tags (checked at every load), the artifacts under
    ``andon/``, the MLflow model, and (``register``) a registered version aliased challenger.
    ``tags`` gains the digests. Returns (the logged model's info, the version or None)."""
    import mlflow
    import torch

    digests = artifact_digests(folder)
    mlflow.set_tags(digests)
    tags.update(digests)
    mlflow.log_artifacts(str(folder), artifact_path="andon")
    model.eval()
    info = mlflow.pytorch.log_model(
        model,
        name="model",
        input_example=example,
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "numpy"],
    )
    version = None
    if register:
        version = register_version(name, info.model_uri, run_id, tags, model_id=info.model_id)
        set_alias(name, CHALLENGER, version)
    return info, version


def artifact_digests(folder: Path) -> dict[str, str]:
    """The tags that pin a version's ``andon/`` folder: the weights file and the decision specs.
    Written by every trainer before the folder is logged (``train_plant``, ``train_sensor``)."""
    return {WEIGHTS_TAG: sha256_of(folder / "state_dict.pt"), SPECS_TAG: _specs_sha256(folder)}


def _recorded_digests(run_id: str, version_tags: dict[str, str] | None, what: str) -> dict[str, str]:
    """The digests the run's lineage recorded; the version's tags, where given, must agree."""
    from andon.lifecycle.registry import client, with_retries

    run_tags = with_retries(lambda: client().get_run(run_id).data.tags, f"read run {run_id}")
    recorded = {t: run_tags.get(t, "") for t in (WEIGHTS_TAG, SPECS_TAG)}
    recorded.update({t: v for t, v in run_tags.items() if t.startswith("inference.")})  # runtimes.FILE_TAGS
    if not recorded[WEIGHTS_TAG]:
        raise IntegrityError(
            f"{what}: no {WEIGHTS_TAG} in its lineage, so its weights cannot be verified; refusing to load it "
            "(versions trained before weight digests existed must be retrained: `andon train`)"
        )
    for tag, value in (version_tags or {}).items():
        if tag in recorded and value and value != recorded[tag]:
            raise IntegrityError(
                f"{what}: the version's {tag} {value} is not its run's {recorded[tag]}: its lineage was altered; "
                "refusing to load it"
            )
    return recorded


def _refuse(what: str, artifact: str, expected: str, found: str) -> IntegrityError:
    message = (
        f"{what}: {artifact} does not match its lineage (expected sha256 {expected}, found {found}): "
        "the file was replaced or corrupted in the artifact store; refusing to load it"
    )
    logger.error(message)
    return IntegrityError(message)


def verify_weights(path: Path, expected: str, what: str) -> None:
    found = sha256_of(path)
    if found != expected:
        raise _refuse(what, "andon/state_dict.pt", expected, found)


def verify_folder(folder: Path, recorded: dict[str, str], what: str) -> None:
    """Refuse ``folder`` (a downloaded ``andon/``) unless its weights and specs are as recorded."""
    verify_weights(folder / "state_dict.pt", recorded[WEIGHTS_TAG], what)
    if recorded.get(SPECS_TAG):
        found = _specs_sha256(folder)
        if found != recorded[SPECS_TAG]:
            raise _refuse(what, f"andon/{{{','.join(SPEC_FILES)}}}", recorded[SPECS_TAG], found)


def load_state_dict(name: str, version: int) -> dict[str, Any]:
    """The state_dict of a registered version, its sha256 verified against the version's lineage,
    loaded with ``weights_only=True`` (no unpickling)."""
    import mlflow
    import torch

    from andon.lifecycle.registry import version_info

    info = version_info(name, version)
    what = f"{name} version {version}"
    recorded = _recorded_digests(info.run_id, info.tags, what)
    path = Path(mlflow.artifacts.download_artifacts(run_id=info.run_id, artifact_path="andon/state_dict.pt"))
    verify_weights(path, recorded[WEIGHTS_TAG], what)
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    return state


@dataclass
class LoadedVersion:
    """A trained version ready to decide: the network (eval mode), its architecture and
    preprocessing specs, and its operating point."""

    model: Any
    arch: dict[str, Any]
    prep: dict[str, Any]
    operating_point: OperatingPoint
    root: Path | None = None  # the downloaded andon/ artifacts (the inference files are under it)
    lineage: dict[str, str] = field(default_factory=dict)  # the run's recorded digests

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.arch["classes"])

    @property
    def size(self) -> int:
        return int(self.prep["size"])

    @property
    def transform(self) -> str:
        return str(self.prep.get("transform", "resize"))  # versions before transforms: resize

    @property
    def anomaly(self) -> bool:
        return self.arch["name"] in ("patchcore", "either")

    def predict(self, images: Any, runner: Any = None) -> tuple[Any, Any]:
        """(class probabilities, defect scores) of ``uint8 (N, size, size)`` images, by torch or
        by ``runner`` (andon/models/runtimes.py)."""
        if runner is None:
            probs = predict(self.model, images)
        else:
            import numpy as np

            out = [runner.run(images[i : i + 256])[0] for i in range(0, len(images), 256)]
            probs = np.concatenate(out) if out else np.zeros((0, len(self.classes)), np.float32)
        return probs, defect_scores(probs)

    def runner(self, runtime: str, fast_model: Any = None, threads: int = 0) -> Any:
        """The runner ``runtime`` for this version (:func:`andon.models.runtimes.open_runner`)."""
        from andon.models import optimize_for_inference, runtimes

        fast = fast_model if fast_model is not None or runtime != "torch" else optimize_for_inference(self.model)
        return runtimes.open_runner(runtime, self.root, fast, self.lineage, threads=threads, anomaly=self.anomaly)


def load_version(name: str, version: int) -> LoadedVersion:
    """A registered version (network, specs, operating point)."""
    from andon.lifecycle.registry import version_info
    from andon.models.runtimes import VERIFIED_TAG

    info = version_info(name, version)
    loaded = load_run(info.run_id, version_tags=info.tags, what=f"{name} version {version}")
    if VERIFIED_TAG in info.tags:  # the runtimes the promotion gate found equivalent to torch
        loaded.lineage[VERIFIED_TAG] = info.tags[VERIFIED_TAG]
    return loaded


def load_run(run_id: str, *, version_tags: dict[str, str] | None = None, what: str = "") -> LoadedVersion:
    """A training run's model, registered or not (a governance trial or a tune candidate is not).
    Its weights and specs are verified against the sha256 its lineage recorded before anything is
    loaded (:class:`IntegrityError` otherwise). A version trained before operating points existed
    decides as it did then (argmax: a defect probability of 0.5 for two classes)."""
    import mlflow
    import torch

    from andon.models import build_from_arch

    what = what or f"run {run_id}"
    recorded = _recorded_digests(run_id, version_tags, what)
    root = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="andon"))
    verify_folder(root, recorded, what)
    arch = json.loads((root / "architecture.json").read_text())
    prep = json.loads((root / "preprocessing.json").read_text())
    model = build_from_arch(arch)
    model.load_state_dict(torch.load(root / "state_dict.pt", map_location="cpu", weights_only=True))
    model.eval()
    op_file = root / "operating_point.json"
    if op_file.exists():
        op = OperatingPoint.from_dict(json.loads(op_file.read_text()))
    else:
        op = OperatingPoint(0.5, chosen_on="none: trained before operating points (argmax)", feasible=False)
    return LoadedVersion(model, arch, prep, op, root, recorded)
