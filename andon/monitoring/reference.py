"""The reference profile a champion is monitored against, built from its validation split at
training time and stored with the version (``andon/reference.json`` + ``reference.parquet``).

Per part of the validation split: the drift features scoring logs (brightness, contrast,
sharpness of the raw image; the first embedding dimensions), the prediction (class, confidence,
defect probability, entropy, margin) and whether it was right. Summarised per feature: mean, sd
and a **tolerance band**, the shift of the feature's mean that the training augmentations
themselves produce at their extremes (brightness +-limit, contrast, gamma, blur, noise). A
production shift inside the band is variation the model was trained to ignore and raises no
alarm; only the excess is charted. Plus the temperature that calibrates the confidences on the
validation split, for the label-free accuracy estimate.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from andon.errors import DataError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from andon.config import Recipe
    from andon.storage import ObjectStore
    from andon.training.data import ImageCache, ImageSet

IMAGE_FEATURES = ("brightness", "contrast", "sharpness")
EMBEDDING_FEATURES = tuple(f"emb_{i}" for i in range(8))
DRIFT_FEATURES = IMAGE_FEATURES + EMBEDDING_FEATURES


@dataclass
class FeatureRef:
    mean: float
    sd: float
    tol_down: float = 0.0
    tol_up: float = 0.0


@dataclass
class Reference:
    model_name: str
    version: int
    n: int
    classes: list[str]
    features: dict[str, FeatureRef]
    defect_rate: float
    confidence: FeatureRef
    entropy: FeatureRef
    accuracy: float
    defect_recall: float
    temperature: float
    estimated_accuracy: FeatureRef
    tolerance_from: list[str] = field(default_factory=list)
    escape_rate: float = float("nan")  # on the validation split, at the version's operating point
    overkill_rate: float = float("nan")
    threshold: float = 0.5  # the operating point the predictions above were decided at

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> Reference:
        raw = json.loads(text)
        raw["features"] = {k: FeatureRef(**v) for k, v in raw["features"].items()}
        for k in ("confidence", "entropy", "estimated_accuracy"):
            raw[k] = FeatureRef(**raw[k])
        return cls(**raw)


def grey_stats(grey: np.ndarray) -> tuple[float, float, float]:
    """(brightness, contrast, sharpness) exactly as the gate and scoring compute them."""
    import numpy as np

    g = grey.astype(np.float32)
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    return float(g.mean()), float(g.std()), float(lap.var())


def _params(recipe: Recipe, name: str) -> dict[str, Any] | None:
    for aug in recipe.augmentations:
        if aug.name == name:
            return dict(aug.params)
    return None


def _pair(value: Any, default: float) -> tuple[float, float]:
    if value is None:
        return (-default, default)
    if isinstance(value, list | tuple):
        return float(value[0]), float(value[1])
    return -float(value), float(value)


def extreme_transforms(recipe: Recipe) -> list[tuple[str, Callable[[np.ndarray], np.ndarray]]]:
    """The photometric augmentations of ``recipe`` at their extremes, as functions on uint8 images."""
    import numpy as np
    from PIL import Image, ImageFilter

    out: list[tuple[str, Callable[[np.ndarray], np.ndarray]]] = []

    def clip(a: np.ndarray) -> np.ndarray:
        return np.clip(a, 0, 255).astype(np.uint8)

    def shifted(b: float) -> Callable[[np.ndarray], np.ndarray]:
        return lambda g: clip(g.astype(np.float32) + b * 255)

    def scaled(c: float) -> Callable[[np.ndarray], np.ndarray]:
        return lambda g: clip(g.astype(np.float32) * (1 + c))

    def gamma(y: float) -> Callable[[np.ndarray], np.ndarray]:
        return lambda g: clip(255 * (g / 255.0) ** y)

    def blurred(sigma: float) -> Callable[[np.ndarray], np.ndarray]:
        return lambda g: np.asarray(Image.fromarray(g).filter(ImageFilter.GaussianBlur(sigma)))

    def noisy(sd: float) -> Callable[[np.ndarray], np.ndarray]:
        rng = np.random.default_rng(0)
        return lambda g: clip(g.astype(np.float32) + rng.normal(0, sd * 255, g.shape))

    p = _params(recipe, "RandomBrightnessContrast")
    if p is not None:
        out += [(f"brightness {b:+.2f}", shifted(b)) for b in _pair(p.get("brightness_limit"), 0.2)]
        out += [(f"contrast {c:+.2f}", scaled(c)) for c in _pair(p.get("contrast_limit"), 0.2)]
    p = _params(recipe, "RandomGamma")
    if p is not None:
        lo, hi = _pair(p.get("gamma_limit"), 0.0) if p.get("gamma_limit") else (80.0, 120.0)
        out += [(f"gamma {y:.2f}", gamma(y)) for y in (lo / 100, hi / 100)]
    p = _params(recipe, "GaussianBlur")
    if p is not None:
        _, k = _pair(p.get("blur_limit"), 3)
        out.append((f"blur {int(k)}x{int(k)}", blurred(0.3 * ((k - 1) * 0.5 - 1) + 0.8)))  # OpenCV's sigma
    p = _params(recipe, "GaussNoise")
    if p is not None:
        _, hi = _pair(p.get("std_range"), 0.05) if p.get("std_range") else (0.0, 0.05)
        out.append((f"noise sd {hi:.2f}", noisy(hi)))
    return out


def _calibrate_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising the validation NLL (grid + refinement; 1.0 when degenerate)."""
    import numpy as np

    def nll(t: float) -> float:
        z = logits / t
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-logp[np.arange(len(labels)), labels].mean())

    if len(labels) < 10:
        return 1.0
    grid = np.exp(np.linspace(math.log(0.25), math.log(8.0), 61))
    best = float(min(grid, key=nll))
    fine = np.linspace(best * 0.9, best * 1.1, 21)
    return float(min(fine, key=nll))


def calibrated_confidence(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Max class probability after temperature scaling (logged probabilities -> log-odds)."""
    import numpy as np

    z = np.log(np.clip(probs, 1e-9, 1.0)) / temperature
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return (p.max(axis=1) / p.sum(axis=1)).astype(np.float64)


def _ref(values: Any) -> FeatureRef:
    import numpy as np

    v = np.asarray(values, dtype=np.float64)
    return FeatureRef(float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0)


def build_reference(
    store: ObjectStore,
    cache: ImageCache,
    model: Any,
    recipe: Recipe,
    val: ImageSet,
    model_name: str = "",
    version: int = 0,
    sample: int = 64,
    threshold: float = 0.5,
) -> tuple[Reference, pd.DataFrame]:
    """The reference of ``model`` from its validation split ``val`` (images at model size, with
    their manifest rows for the raw bytes), its predictions decided at ``threshold`` (the
    version's operating point, as scoring decides them)."""
    import numpy as np
    import pandas as pd
    import torch

    from andon.training.loop import to_tensor

    if len(val) < 2:
        raise DataError("the validation split is too small to build a monitoring reference")
    model.eval()
    with torch.inference_mode():
        x = to_tensor(val.images)
        feats = model.features(x)
        logits = (model.head(feats) if hasattr(model, "head") else model(x)).numpy().astype(np.float64)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    emb = feats[:, : len(EMBEDDING_FEATURES)].numpy()
    raw = np.array(
        [grey_stats(_decode_full(cache.get(store, o["key"], o["sha256"]))) for o in val.objects], dtype=np.float64
    )
    from andon.quality import decide

    index = {c: i for i, c in enumerate(recipe.classes)}
    pred = np.array([index[c] for c in decide(probs, threshold, recipe.classes)], dtype=np.int64)
    entropy = -(np.clip(probs, 1e-9, 1) * np.log(np.clip(probs, 1e-9, 1))).sum(1)
    frame = pd.DataFrame(raw, columns=list(IMAGE_FEATURES))
    for i, col in enumerate(EMBEDDING_FEATURES[: emb.shape[1]]):
        frame[col] = emb[:, i]
    frame["confidence"] = probs.max(1)
    frame["p_defect"] = 1 - probs[:, 0]
    frame["entropy"] = entropy
    frame["predicted_class"] = [recipe.classes[i] for i in pred]
    frame["label"] = [recipe.classes[i] for i in val.labels]
    frame["correct"] = pred == val.labels

    temperature = _calibrate_temperature(logits, val.labels)
    est = calibrated_confidence(probs, temperature)
    features = {c: _ref(frame[c]) for c in frame.columns if c in DRIFT_FEATURES}
    names = _tolerances(model, recipe, val, features, frame, sample)
    defect = val.labels != 0
    return (
        Reference(
            model_name=model_name,
            version=version,
            n=len(val),
            classes=list(recipe.classes),
            features=features,
            defect_rate=float((pred != 0).mean()),
            confidence=_ref(frame["confidence"]),
            entropy=_ref(entropy),
            accuracy=float((pred == val.labels).mean()),
            defect_recall=float((pred[defect] != 0).mean()) if defect.any() else float("nan"),
            temperature=temperature,
            estimated_accuracy=_ref(est),
            tolerance_from=names,
            escape_rate=float((pred[defect] == 0).mean()) if defect.any() else float("nan"),
            overkill_rate=float((pred[~defect] != 0).mean()) if (~defect).any() else float("nan"),
            threshold=float(threshold),
        ),
        frame,
    )


def _decode_full(data: bytes) -> np.ndarray:
    import io

    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("L"))


def _tolerances(
    model: Any,
    recipe: Recipe,
    val: ImageSet,
    features: dict[str, FeatureRef],
    frame: pd.DataFrame,
    sample: int,
) -> list[str]:
    """Fill ``tol_down / tol_up`` from the augmentations' extremes on a sample of ``val``."""
    import numpy as np
    import torch

    from andon.training.loop import to_tensor

    imgs = val.images[:sample]
    transforms = extreme_transforms(recipe)
    base_stats = np.array([grey_stats(g) for g in imgs])
    with torch.inference_mode():
        base_emb = model.features(to_tensor(imgs))[:, : len(EMBEDDING_FEATURES)].numpy().mean(0)
    for _, fn in transforms:
        moved = np.stack([fn(g) for g in imgs])
        stats = np.array([grey_stats(g) for g in moved])
        rel = (stats.mean(0) - base_stats.mean(0)) / np.maximum(np.abs(base_stats.mean(0)), 1e-9)
        with torch.inference_mode():
            emb = model.features(to_tensor(moved))[:, : len(EMBEDDING_FEATURES)].numpy().mean(0)
        for i, col in enumerate(IMAGE_FEATURES):
            shift = rel[i] * features[col].mean  # relative shift at model size -> raw units
            _widen(features[col], shift)
        for i, col in enumerate(EMBEDDING_FEATURES[: len(emb)]):
            if col in features:
                _widen(features[col], float(emb[i] - base_emb[i]))
    return [name for name, _ in transforms]


def _widen(ref: FeatureRef, shift: float) -> None:
    if shift >= 0:
        ref.tol_up = max(ref.tol_up, float(shift))
    else:
        ref.tol_down = max(ref.tol_down, float(-shift))


def load_reference(name: str, version: int) -> tuple[Reference, pd.DataFrame]:
    """The reference stored with a registered version."""
    import mlflow
    import pandas as pd

    from andon.lifecycle.registry import RegistryError, version_info

    info = version_info(name, version)
    try:
        path = mlflow.artifacts.download_artifacts(run_id=info.run_id, artifact_path="andon/reference.json")
        table = mlflow.artifacts.download_artifacts(run_id=info.run_id, artifact_path="andon/reference.parquet")
    except Exception as exc:  # MLflow raises several types for a missing artifact
        raise RegistryError(
            f"{name} v{version} has no monitoring reference (trained before references existed?): retrain it ({exc})"
        ) from None
    from pathlib import Path

    ref = Reference.from_json(Path(path).read_text())
    ref.model_name, ref.version = name, version  # written before registration gave the number
    return ref, pd.read_parquet(table)
