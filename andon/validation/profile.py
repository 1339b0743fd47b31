"""Bounds learned from a known-good reference batch, so plants do not hand-write hundreds of
ranges (SECOM has 590 columns). A profile is a reviewable YAML file, versioned in git under
``configs/validation/<plant>.yaml`` and bumped on every re-learn.

Batch-level bounds (column means, missing rates, image statistics) allow for the sampling
error of a batch of ``min_batch_rows`` rows around the reference value, plus a floor, so a
healthy small batch passes while a real shift (a sensor reporting Celsius, a dimmed lamp)
fails.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from andon.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from andon.validation.spec import TableSpec


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ColumnProfile(_Model):
    mean: float
    std: float
    autocorr_time: float = 1.0  # rows per independent reading (1 = independent)
    mean_low: float
    mean_high: float
    missing_rate: float
    max_missing_rate: float


class TableProfile(_Model):
    rows: int
    columns: dict[str, ColumnProfile]


class StatBounds(_Model):
    """Per-image bounds (most images must fall inside) and batch-mean bounds of one statistic."""

    low: float
    high: float
    mean_low: float
    mean_high: float


class ImageProfile(_Model):
    images: int
    camera: str = ""  # the camera these bounds hold for (lines sharing that camera share them)
    lines: list[str] = Field(default_factory=list)
    brightness: StatBounds
    contrast: StatBounds
    sharpness: StatBounds


class ValidationProfile(_Model):
    plant: str
    version: int = Field(ge=1)
    learned_at: str
    reference: list[str]
    min_batch_rows: int
    tables: dict[str, TableProfile] = Field(default_factory=dict)
    images: dict[str, ImageProfile] = Field(default_factory=dict, description="by camera signature")

    def images_for(self, camera_signature: str) -> ImageProfile | None:
        return self.images.get(camera_signature)


def _tolerance(std: float, n: int, floor_share: float, scale: float, tau: float = 1.0, n_ref: int = 0) -> float:
    """Allowed distance of a batch mean from the reference mean: 4 standard errors of the
    difference, plus a floor.

    Consecutive readings of a process are correlated (a warm machine stays warm), so ``n`` rows
    carry the information of ``n / tau`` independent ones, ``tau`` the integrated
    autocorrelation time measured on the reference. The reference mean is uncertain too.
    """
    var = 1.0 / max(n / tau, 1.0) + (1.0 / max(n_ref / tau, 1.0) if n_ref else 0.0)
    return max(4.0 * std * math.sqrt(var), floor_share * std, 1e-9 * max(abs(scale), 1.0))


def autocorrelation_time(values: Any, max_lag: int = 50) -> float:
    """``1 + 2 sum(rho_k)`` over lags until the autocorrelation drops below 0.05 (Sokal's window)."""
    import numpy as np

    x = np.asarray(values, dtype=float)
    x = x - x.mean()
    denom = float(x @ x)
    if len(x) < 10 or denom == 0:
        return 1.0
    tau = 1.0
    for k in range(1, min(max_lag, len(x) // 4)):
        rho = float(x[:-k] @ x[k:]) / denom
        if rho < 0.05:
            break
        tau += 2 * rho
    return tau


def learn_table(frame: pd.DataFrame, spec: TableSpec, min_batch_rows: int = 100) -> TableProfile:
    """Mean and missing-rate bounds of every numeric column of a known-good reference."""
    import numpy as np
    import pandas as pd

    columns: dict[str, ColumnProfile] = {}
    numeric = spec.numeric_columns()
    if spec.learn_all_numeric:
        skip = {spec.id_column, *spec.increasing}
        numeric += [
            c
            for c in frame.columns
            if c not in spec.columns and c not in skip and pd.api.types.is_numeric_dtype(frame[c])
        ]
    for col in numeric:
        if col not in frame.columns:
            continue
        values = pd.to_numeric(frame[col], errors="coerce").replace([np.inf, -np.inf], np.nan)
        missing = float(values.isna().mean())
        present = values.dropna()
        if present.empty:
            continue
        mean, std = float(present.mean()), float(present.std(ddof=0))
        tau = autocorrelation_time(present.to_numpy())
        tol = _tolerance(std, min_batch_rows, 0.25, mean, tau, n_ref=len(present))
        miss_tol = max(0.02, 4 * math.sqrt(missing * (1 - missing) / min_batch_rows))
        columns[str(col)] = ColumnProfile(
            mean=mean,
            std=std,
            autocorr_time=tau,
            mean_low=mean - tol,
            mean_high=mean + tol,
            missing_rate=missing,
            max_missing_rate=min(1.0, missing + miss_tol),
        )
    return TableProfile(rows=len(frame), columns=columns)


def learn_images(
    stats: pd.DataFrame, min_batch_rows: int = 50, camera: str = "", lines: list[str] | None = None
) -> ImageProfile:
    """Bounds of brightness, contrast and sharpness from the image statistics of a reference.

    Per image: the reference's 1st-99th percentile widened by a quarter of that range (90 % of a
    batch's images must fall inside). Batch mean: the reference mean +- the larger of 4 standard
    errors and one standard deviation of single images, because a batch's class mix moves its
    mean (defective castings are sharper) while a real optical change (a dimmed lamp, a lens out
    of focus) moves it by several.
    """
    ok = stats[stats["decodes"]]
    if ok.empty:
        raise ConfigError("the reference holds no decodable image: nothing to learn from")

    def bounds(col: str) -> StatBounds:
        v = ok[col].astype(float)
        lo, hi = float(v.quantile(0.01)), float(v.quantile(0.99))
        pad = 0.25 * (hi - lo)
        mean, std = float(v.mean()), float(v.std(ddof=0))
        tol = _tolerance(std, min_batch_rows, 1.0, mean, n_ref=len(v))
        return StatBounds(low=lo - pad, high=hi + pad, mean_low=mean - tol, mean_high=mean + tol)

    return ImageProfile(
        images=len(ok),
        camera=camera,
        lines=lines or [],
        brightness=bounds("brightness"),
        contrast=bounds("contrast"),
        sharpness=bounds("sharpness"),
    )


def profiles_dir() -> Path:
    from andon.config import configs_dir

    return configs_dir() / "validation"


def load_profile(plant: str, root: Path | None = None) -> ValidationProfile | None:
    """The plant's learned profile, or None when none was learned yet."""
    import yaml

    path = (root or profiles_dir()) / f"{plant}.yaml"
    if not path.exists():
        return None
    try:
        return ValidationProfile.model_validate(yaml.safe_load(path.read_text()))
    except Exception as exc:  # pydantic or YAML: both mean a broken file a person must fix
        raise ConfigError(f"{path}: invalid validation profile: {exc}") from None


def save_profile(
    plant: str,
    reference: list[str],
    tables: dict[str, TableProfile],
    images: dict[str, ImageProfile],
    min_batch_rows: int,
    root: Path | None = None,
) -> tuple[ValidationProfile, Path]:
    """Write the next version of the plant's profile (YAML, sorted, diff-friendly)."""
    import yaml

    root = root or profiles_dir()
    previous = load_profile(plant, root)
    profile = ValidationProfile(
        plant=plant,
        version=(previous.version + 1) if previous else 1,
        learned_at=datetime.now(UTC).isoformat(timespec="seconds"),
        reference=reference,
        min_batch_rows=min_batch_rows,
        tables=tables,
        images=images,
    )
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{plant}.yaml"
    data: dict[str, Any] = _round(profile.model_dump(mode="json"))
    header = f"# learned by `andon validate learn` from {', '.join(reference)}; review before committing\n"
    path.write_text(header + yaml.safe_dump(data, sort_keys=False))
    return profile, path


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_round(v) for v in value]
    return value
