"""Train one model version for a plant: the callable that the ``train`` flow, ``andon train``
and ``andon models reproduce`` all run.

Data comes from dataset manifests only (content-addressed, validated); the held-out split is a
function of each object's key; everything that shaped the model (resolved recipe, data
checksum, code commit, config checksum, parent version) is recorded in MLflow, and the version
is registered as ``<plant>.<task>`` with alias ``challenger``.
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from andon.config import PlantConfig, Recipe
from andon.datasets import combine, load_manifest, require_usable
from andon.errors import DataError
from andon.monitoring.reference import build_reference
from andon.registry import CHALLENGER, code_state, model_name, register_version, set_alias
from andon.storage import ObjectStore
from andon.training.augment import build_augmentations
from andon.training.data import ImageCache, load_split, split_objects
from andon.training.evaluate import classification_metrics, confusion_png, worst_errors_png
from andon.training.loop import PREPROCESSING, EpochLog, fit, predict, seed_everything, to_tensor

if TYPE_CHECKING:
    from torch import nn


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


def architecture_spec(recipe: Recipe, num_classes: int) -> dict[str, Any]:
    return {
        "name": recipe.model.name,
        "width": recipe.model.width,
        "in_channels": recipe.image.channels,
        "num_classes": num_classes,
        "classes": list(recipe.classes),
    }


def preprocessing_spec(recipe: Recipe) -> dict[str, Any]:
    return {"size": recipe.image.size, **PREPROCESSING}


def resolve_dataset(store: ObjectStore, plant: str, manifest_ids: list[str]) -> tuple[str, list[dict[str, Any]]]:
    if not manifest_ids:
        raise DataError("give at least one dataset id (see `andon datasets list --plant ...`)")
    if len(manifest_ids) == 1:
        m = require_usable(store, load_manifest(store, plant, manifest_ids[0]))
    else:
        m = combine(store, plant, manifest_ids)
    return m.id, m.objects


def latency_p95_ms(model: nn.Module, images: Any, n: int = 50) -> float:
    """p95 of single-part inference time (what one camera trigger waits for)."""
    import numpy as np
    import torch

    model.eval()
    times = []
    with torch.inference_mode():
        for img in images[:n]:
            t0 = time.perf_counter()
            model(to_tensor(img[None]))
            times.append((time.perf_counter() - t0) * 1000)
    return float(np.percentile(times, 95)) if times else 0.0


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

    from andon.models import build_model
    from andon.registry import ensure_experiment, use_tracking_server
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
    sets = {s: load_split(store, objs, recipe.classes, size, cache, progress=None) for s, objs in splits.items()}

    seed_everything(tr.seed)
    model = build_model(recipe.model.name, recipe.image.channels, len(recipe.classes), recipe.model.width)
    parent_version = ""
    if parent is not None:
        model.load_state_dict(load_state_dict(*parent))
        parent_version = f"{parent[0]}/{parent[1]}"

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
        **(extra_tags or {}),
    }
    mlflow.set_experiment(experiment_id=ensure_experiment(name))
    with mlflow.start_run(run_name=f"{cfg.id}-{recipe.name}") as run, tempfile.TemporaryDirectory() as tmp_dir:
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
                    "val_accuracy": log.val_accuracy,
                    "epoch_seconds": log.seconds,
                    "train_images_per_s": log.images_per_s,
                },
                step=log.epoch,
            )
            if on_epoch:
                on_epoch(log)

        augment = build_augmentations(recipe.augmentations, tr.seed)
        result = fit(model, sets["train"], sets["val"], tr, augment, on_epoch=epoch_logged, on_batch=on_batch)
        test = sets["test"]
        probs = predict(model, test.images)
        metrics = classification_metrics(probs, test.labels, recipe.classes)
        metrics["latency_p95_ms"] = latency_p95_ms(model, test.images)
        metrics["best_epoch"] = float(result.best_epoch)
        mlflow.log_metrics({f"test_{k}": v for k, v in metrics.items()})

        andon_dir = tmp / "andon"
        andon_dir.mkdir()
        torch.save(model.state_dict(), andon_dir / "state_dict.pt")
        (andon_dir / "architecture.json").write_text(
            json.dumps(architecture_spec(recipe, len(recipe.classes)), indent=1)
        )
        (andon_dir / "preprocessing.json").write_text(json.dumps(preprocessing_spec(recipe), indent=1))
        (andon_dir / "recipe.json").write_text(recipe.model_dump_json(indent=1))
        (andon_dir / "split.json").write_text(json.dumps({s: [o["key"] for o in objs] for s, objs in splits.items()}))
        (andon_dir / "environment.json").write_text(json.dumps(environment(), indent=1))
        confusion_png(
            test.labels,
            probs,
            recipe.classes,
            andon_dir / "confusion_matrix.png",
            f"{name} test: acc {metrics['accuracy']:.3f}",
        )
        worst_errors_png(test.images, test.labels, probs, recipe.classes, andon_dir / "worst_errors.png")
        # what monitoring compares production against: the validation split's features and predictions
        reference, ref_frame = build_reference(store, cache, model, recipe, sets["val"], name)
        (andon_dir / "reference.json").write_text(reference.to_json())
        ref_frame.to_parquet(andon_dir / "reference.parquet")
        mlflow.log_artifacts(str(andon_dir), artifact_path="andon")
        model.eval()
        info = mlflow.pytorch.log_model(
            model,
            name="model",
            input_example=to_tensor(test.images[:2]).numpy(),
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "numpy"],
        )
        version = None
        if register:
            version = register_version(name, info.model_uri, run.info.run_id, tags, model_id=info.model_id)
            set_alias(name, CHALLENGER, version)
    epochs = len(result.history)
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
    )


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


def load_state_dict(name: str, version: int) -> dict[str, Any]:
    """The state_dict of a registered version, loaded with ``weights_only=True`` (no unpickling)."""
    import mlflow
    import torch

    from andon.registry import version_info

    info = version_info(name, version)
    path = mlflow.artifacts.download_artifacts(run_id=info.run_id, artifact_path="andon/state_dict.pt")
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    return state


def load_version(name: str, version: int) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """(model in eval mode, architecture spec, preprocessing spec) of a registered version."""
    from andon.registry import version_info

    return load_run(version_info(name, version).run_id)


def load_run(run_id: str) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """(model in eval mode, architecture spec, preprocessing spec) of a training run, registered
    or not (a governance trial is not)."""
    import mlflow
    import torch

    from andon.models import build_model

    root = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="andon"))
    arch = json.loads((root / "architecture.json").read_text())
    prep = json.loads((root / "preprocessing.json").read_text())
    model = build_model(arch["name"], arch["in_channels"], arch["num_classes"], arch["width"])
    model.load_state_dict(torch.load(root / "state_dict.pt", map_location="cpu", weights_only=True))
    model.eval()
    return model, arch, prep
