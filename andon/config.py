"""Plant configs: one standard recipe (``configs/base.yaml``) plus per-plant overrides.

A plant file (``configs/plants/<plant>.yaml``) holds only what differs from the base. The two are
deep-merged (mappings merge key by key, lists and scalars replace), then validated once by
pydantic. Unknown keys are errors, so a typo never silently falls back to a default. Errors name
the file the offending value came from: ``plants/plant-b.yaml: camera.gama: unknown field``.

Example:
    >>> from andon.config import load_plant
    >>> cfg = load_plant("plant-a")
    >>> cfg.id, cfg.recipe.image.size
    ('plant-a', 128)
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from andon.errors import ConfigError, UnknownPlantError

PLANT_ID_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Augmentation(_Strict):
    """One albumentations transform by class name; ``params`` are passed with ``strict=True``."""

    name: str = Field(pattern=r"^[A-Z][A-Za-z0-9]+$", description="albumentations class name")
    p: float = Field(default=0.5, ge=0.0, le=1.0)
    params: dict[str, Any] = Field(default_factory=dict)


class ModelSpec(_Strict):
    name: str = Field(description="network by name: small_cnn, mobilenet_v3_small, resnet18...")
    width: int = Field(default=16, ge=4, le=256, description="base channel count of small_cnn")


class ImageSpec(_Strict):
    size: int = Field(default=128, ge=16, le=1024, description="square side the model sees, pixels")
    channels: Literal[1, 3] = 1
    transform: Literal["resize", "letterbox", "center_crop"] = Field(
        default="resize", description="how an image of any size becomes the model's square (andon/imaging.py)"
    )


class TrainingSpec(_Strict):
    epochs: int = Field(default=8, ge=1, le=500)
    batch_size: int = Field(default=64, ge=1, le=4096)
    learning_rate: float = Field(default=3e-3, gt=0, le=1)
    weight_decay: float = Field(default=1e-4, ge=0, le=1)
    early_stopping_patience: int = Field(default=3, ge=1, le=100)
    val_fraction: float = Field(default=0.15, gt=0, lt=0.5)
    test_fraction: float = Field(default=0.15, gt=0, lt=0.5)
    seed: int = Field(default=42, ge=0)
    sampling: Literal["weighted_loss", "balanced", "none"] = Field(
        default="balanced", description="how rare defects are kept from being ignored (andon/training/loop.py)"
    )


class Thresholds(_Strict):
    defect_probability: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description=(
            "pins the operating point (reject at 1 - p(ok) >= this); unset: each version's threshold is chosen "
            "on its validation split to meet quality.max_escape_rate with the least overkill"
        ),
    )
    uncertain_margin: float = Field(default=0.2, ge=0, le=1, description="margin under which a part is uncertain")


class PromotionRules(_Strict):
    """How a challenger compares with the champion (each at its own operating point) on the golden
    set; the absolute rules every champion must meet are the plant's ``quality`` section."""

    max_escape_increase: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="the challenger's escape rate may exceed the champion's by this (0.01 = 1 point)",
    )
    max_overkill_increase: float = Field(
        default=0.02, ge=0, le=1, description="the challenger's overkill rate may exceed the champion's by this"
    )
    min_accuracy: float = Field(default=0.0, ge=0, le=1, description="an optional floor, second to escape and overkill")
    max_latency_ms: float = Field(
        default=50.0, gt=0, description="single-part inference, best of repeated runs on one thread (load-proof)"
    )


class ExplainSpec(_Strict):
    """Which predictions get a saliency map logged with them."""

    method: Literal["input_gradient", "gradcam", "shap"] = Field(
        default="input_gradient", description="see andon/explain/maps.py for why"
    )
    pass_sample: float = Field(default=0.02, ge=0, le=1, description="share of passes explained too (by part id)")
    top_regions: int = Field(default=3, ge=1, le=16, description="regions logged as numbers per part")


class AnomalySpec(_Strict):
    """The anomaly model (``recipe.kind: anomaly`` or ``both``): PatchCore over a backbone, fitted on
    good parts only (andon/training/anomaly.py)."""

    backbone: Literal["central", "file", "random"] = Field(
        default="central",
        description="central: the fleet's central champion; file: backbone_file from the object store; "
        "random: untrained (a baseline); with kind both: always the classifier trained in the same run",
    )
    backbone_file: str | None = Field(default=None, description="object key of a state_dict of recipe.model")
    backbone_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$", description="checked at load")
    strides: tuple[int, ...] = Field(
        default=(4, 8),
        min_length=1,
        max_length=3,
        description="feature maps compared patch by patch: 4 and 8 for thin local defects, 32 for the whole part",
    )
    memory_size: int = Field(default=4000, ge=10, le=200_000, description="patches kept in the memory bank")
    max_train_images: int = Field(default=1000, ge=1, le=100_000, description="good parts the bank is built from")
    overkill_share: float = Field(
        default=0.5, gt=0, le=1, description="kind both: share of quality.max_overkill_rate the anomaly part may use"
    )

    @model_validator(mode="after")
    def _file(self) -> AnomalySpec:
        if list(self.strides) != sorted(set(self.strides)) or not set(self.strides) <= {2, 4, 8, 16, 32}:
            raise ValueError(f"strides must be increasing, from 2, 4, 8, 16, 32; got {list(self.strides)}")
        if self.backbone == "file" and not (self.backbone_file and self.backbone_sha256):
            raise ValueError("backbone: file needs backbone_file (object key) and backbone_sha256")
        return self


RUNTIME_NAMES = Literal[
    "openvino-bf16", "openvino-int8", "openvino-fp32", "onnxruntime-int8", "onnxruntime-fp32", "torch"
]  # andon.models.runtimes.RUNTIMES


class InferenceSpec(_Strict):
    """How a version runs in production (andon/models/runtimes.py): exported to ONNX at training,
    optionally quantized, and run by the first runtime of ``runtimes`` that the machine has and the
    promotion gate verified for the version; torch always remains."""

    export: bool = Field(default=True, description="export ONNX at training (sha256 in the lineage)")
    quantize: bool = Field(default=False, description="also an int8 copy, calibrated on the training split")
    calibration_images: int = Field(default=128, ge=8, le=10_000, description="training images the int8 ranges see")
    runtimes: tuple[RUNTIME_NAMES, ...] = Field(
        default=("onnxruntime-fp32", "torch"),
        min_length=1,
        description="preference order; the gate checks each against torch on the golden set. bf16 and int8 are "
        "opt-in: faster, but their embeddings differ from the torch-computed drift reference",
    )
    max_rate_change: float = Field(
        default=0.005,
        ge=0,
        le=0.1,
        description="a runtime may move the escape or the overkill rate by at most this (0.005 = 0.5 point)",
    )

    @field_validator("runtimes")
    @classmethod
    def _unique_runtimes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError(f"runtimes must be unique, got {list(value)}")
        return value


class Recipe(_Strict):
    """The standard training recipe; plants override single fields."""

    name: str = Field(pattern=NAME_RE)
    task: str = Field(pattern=NAME_RE, description="registered model is <plant>.<task>")
    classes: tuple[str, ...] = Field(min_length=2)
    kind: Literal["classifier", "anomaly", "both"] = Field(
        default="classifier",
        description="classifier: learns from labelled defects; anomaly: from good parts only (few or no defect "
        "labels, defect types never seen); both: rejects when either rejects",
    )
    anomaly: AnomalySpec = AnomalySpec()
    model: ModelSpec
    image: ImageSpec = ImageSpec()
    augmentations: tuple[Augmentation, ...] = ()
    training: TrainingSpec = TrainingSpec()
    thresholds: Thresholds = Thresholds()
    promotion: PromotionRules = PromotionRules()
    explain: ExplainSpec = ExplainSpec()
    inference: InferenceSpec = InferenceSpec()

    @field_validator("classes")
    @classmethod
    def _unique_classes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError(f"classes must be unique, got {list(value)}")
        return value

    @model_validator(mode="after")
    def _anomaly_is_binary(self) -> Recipe:
        if self.kind != "classifier" and len(self.classes) != 2:
            raise ValueError(f"kind {self.kind} tells good from defective parts: 2 classes, got {list(self.classes)}")
        if self.kind != "classifier" and self.model.name not in ("small_cnn", "resnet18"):
            raise ValueError(f"kind {self.kind} needs a small_cnn or resnet18 backbone, got {self.model.name}")
        return self

    def with_overrides(self, overrides: dict[str, Any]) -> Recipe:
        """This recipe with ``overrides`` merged in (as a plant file overrides the base), validated.

        >>> r = load_plant("plant-a").recipe
        >>> r.with_overrides({"training": {"epochs": 1}}).training.epochs, r.training.epochs > 1
        (1, True)
        """
        return Recipe.model_validate(deep_merge(self.model_dump(mode="json"), overrides))


class Camera(_Strict):
    """The inspection camera as installed: what makes one plant's images differ from another's."""

    model: str = "generic-mono"
    resolution: int = Field(default=128, ge=16, le=4096, description="square sensor crop, pixels")
    size_range: tuple[int, int] | None = Field(
        default=None,
        description="smallest and largest side (pixels) of the images it sends, for cameras whose crops vary; "
        "unset: exactly resolution x resolution",
    )
    color_mode: Literal["L", "RGB"] = Field(default="L", description="what the camera writes (grey content)")
    rotation_deg: float = Field(default=0.0, ge=-180, le=180, description="mount rotation")
    shift_px: tuple[float, float] = (0.0, 0.0)
    focus_blur_sigma: float = Field(default=0.0, ge=0, le=10)
    noise_std: float = Field(default=4.0, ge=0, le=64, description="sensor noise, grey levels")

    @model_validator(mode="after")
    def _range(self) -> Camera:
        if self.size_range is not None and not 1 <= self.size_range[0] <= self.size_range[1] <= 65_535:
            raise ValueError(f"size_range must be [smallest, largest] side in pixels, got {list(self.size_range)}")
        return self

    def side_range(self) -> tuple[int, int]:
        """The sides (pixels) an image from this camera may have."""
        return self.size_range or (self.resolution, self.resolution)


class Lighting(_Strict):
    brightness: float = Field(default=1.0, gt=0, le=4, description="gain on the whole image")
    gamma: float = Field(default=1.0, gt=0, le=5)
    unevenness: float = Field(default=0.0, ge=0, le=1, description="strength of a left-right light gradient")


class Line(_Strict):
    id: str = Field(pattern=NAME_RE)
    parts_per_second: float = Field(default=10.0, gt=0, le=1000)
    camera: Camera | None = Field(default=None, description="overrides the plant camera for this line")


class Sku(_Strict):
    """A product code and the geometry of its part (used by the synthetic plant)."""

    code: str = Field(pattern=NAME_RE)
    shape: Literal["disc", "plate", "ring", "impeller"] = "disc"
    size: float = Field(default=0.8, gt=0.1, le=1.0, description="part diameter as a fraction of the frame")
    holes: int = Field(default=1, ge=0, le=12)


class SensorRange(_Strict):
    unit: str
    min: float
    max: float
    nominal: float
    noise: float = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> SensorRange:
        if not self.min <= self.nominal <= self.max:
            raise ValueError(f"need min <= nominal <= max, got {self.min} <= {self.nominal} <= {self.max}")
        return self


class DataSpec(_Strict):
    source: Literal["synthetic", "folder"] = "synthetic"
    material: Literal["standard", "supplier-b", "cast"] = "standard"
    defect_rate: float = Field(default=0.05, ge=0, le=1)
    defect_rate_bounds: tuple[float, float] = Field(
        default=(0.02, 0.08), description="a batch outside these is suspicious (validation gate)"
    )
    batch_size: int = Field(default=500, ge=1, le=100_000, description="parts per raw batch")

    @model_validator(mode="after")
    def _bounds(self) -> DataSpec:
        lo, hi = self.defect_rate_bounds
        if not 0 <= lo <= hi <= 1:
            raise ValueError(f"defect_rate_bounds must satisfy 0 <= low <= high <= 1, got {lo}, {hi}")
        return self


class MesSpec(_Strict):
    topic_prefix: str = Field(default="", description="MQTT topic prefix of the plant's MES (Unified Namespace)")
    product_mix_threshold: float = Field(default=0.2, ge=0, le=1, description="mix shift that retrains")


class MonitoringSpec(_Strict):
    """How a plant watches its models (see andon/monitoring/charts.py for the limits)."""

    window_minutes: int = Field(default=5, ge=1, le=1440, description="the incremental run's window")
    false_alarms_per_30_days: float = Field(
        default=1.0, gt=0, le=100, description="budget across all series and charts of the plant"
    )
    reviewed_budget_share: float = Field(
        default=0.5,
        gt=0,
        lt=1,
        description="share of the false-alarm budget for the reviewed accuracy / recall charts (the rest: all others)",
    )
    sensor_budget_share: float = Field(
        default=0.2, gt=0, lt=1, description="share of the false-alarm budget for the sensor model's charts"
    )
    min_parts: int = Field(default=50, ge=1, description="fewer scored parts in a window: no chart update")
    min_labels: int = Field(default=20, ge=1, description="fewer reviewed parts: no accuracy update")
    accuracy_drop_to_detect: float = Field(
        default=0.05, gt=0, lt=1, description="the accuracy drop the reviewed-accuracy CUSUM is tuned to catch fast"
    )
    baseline_windows: int = Field(
        default=72, ge=1, le=10_000, description="first windows of a new champion that set the in-control baseline"
    )
    drift_sample: int = Field(default=5000, ge=100, description="rows per side given to Evidently")
    clear_after_windows: int = Field(
        default=3,
        ge=1,
        le=1000,
        description="an open alert clears only after its series was back in control for this many charted windows",
    )
    gross_relative_change: float = Field(
        default=0.3,
        ge=0,
        le=10,
        description="an image statistic (brightness, contrast, sharpness) whose window mean moved this share of its "
        "reference mean alarms in Phase I and II whatever its z (0: off); a lamp failure took brightness -42 %",
    )


class QualitySpec(_Strict):
    """What the floor demands of every champion at its operating point (the promotion gate's absolute
    rules, the first champion included). See andon/quality.py."""

    max_escape_rate: float = Field(
        default=0.03,
        gt=0,
        lt=0.5,
        description="share of defective parts passed as ok (operating points are chosen to meet it)",
    )
    max_overkill_rate: float = Field(default=0.03, gt=0, lt=1, description="share of good parts rejected")
    min_defects: int = Field(
        default=20, ge=1, le=100_000, description="the gate judges escapes on at least this many evaluated defects"
    )
    confidence: float = Field(default=0.95, ge=0.5, lt=1, description="of the Clopper-Pearson bounds reported")
    require_proven: bool = Field(
        default=False,
        description="the escape rate's upper confidence bound (not only the estimate) must meet max_escape_rate",
    )


Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class MaintenanceWindow(_Strict):
    """A weekly time span (plant's local time) in which no retraining starts."""

    days: tuple[Day, ...] = DAYS
    start: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="HH:MM")
    end: str = Field(pattern=r"^([01]\d|2[0-4]):[0-5]\d$", description="HH:MM (after start)")

    @model_validator(mode="after")
    def _ordered(self) -> MaintenanceWindow:
        if self.end <= self.start:
            raise ValueError(f"end {self.end} must be after start {self.start} (split a window across midnight)")
        return self


class RetrainSpec(_Strict):
    """When an event may start a retraining (the retrain flow's policy step)."""

    cooldown_hours: float = Field(default=6.0, ge=0, le=24 * 30, description="since the last retrain started")
    min_new_labels: int = Field(
        default=200, ge=0, description="labels since the champion was trained; MES-driven retrains need 0"
    )
    accuracy_drop_pct: float = Field(
        default=15.0, gt=0, le=100, description="andon.performance.degraded retrains at this drop (points) or more"
    )
    escape_rise_pct: float = Field(
        default=10.0, gt=0, le=100, description="an escape-rate alert retrains at this rise (points) or more"
    )
    drift_severity: Literal["medium", "high"] = Field(
        default="high", description="andon.drift.detected retrains at this severity or above"
    )
    maintenance_windows: tuple[MaintenanceWindow, ...] = ()
    fine_tune_epochs: int | None = Field(
        default=None, ge=1, le=1000, description="epochs of a fine-tune from the champion (default: the recipe's)"
    )


class LabelingSpec(_Strict):
    """Active learning: how many parts a plant asks people to label."""

    per_window: int = Field(default=20, ge=0, le=10_000, description="parts queued after each scoring window")
    daily_budget: int = Field(default=200, ge=0, le=100_000, description="uncertain parts queued per day at most")
    shortlist: int = Field(default=5, ge=1, le=100, description="k-center picks among shortlist x per_window uncertain")


class ScheduleSpec(_Strict):
    """Cron schedules of the plant's deployments, in the plant's timezone."""

    monitor_hourly: str = "5 * * * *"
    drift_nightly: str = "30 2 * * *"
    retrain_every_days: int = Field(
        default=14, ge=0, le=365, description="a scheduled retrain (trigger 'schedule'); 0 = only on events"
    )


class PlantConfig(_Strict):
    """A plant after merging the base recipe with its overrides."""

    id: str
    name: str
    timezone: str = "UTC"
    object_prefix: str = Field(default="", description="key prefix in the object store; default the plant id")
    lines: tuple[Line, ...] = Field(min_length=1)
    skus: tuple[Sku, ...] = Field(min_length=1)
    camera: Camera = Camera()
    lighting: Lighting = Lighting()
    sensors: dict[str, SensorRange] = Field(default_factory=dict)
    data: DataSpec = DataSpec()
    mes: MesSpec = MesSpec()
    quality: QualitySpec = QualitySpec()
    monitoring: MonitoringSpec = MonitoringSpec()
    retrain: RetrainSpec = RetrainSpec()
    labeling: LabelingSpec = LabelingSpec()
    schedules: ScheduleSpec = ScheduleSpec()
    recipe: Recipe

    @field_validator("id")
    @classmethod
    def _plant_id(cls, value: str) -> str:
        if not PLANT_ID_RE.match(value):
            raise ValueError("must be lowercase letters, digits and dashes, starting with a letter")
        return value

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA timezone {value!r}") from None
        return value

    @field_validator("lines", "skus")
    @classmethod
    def _unique_ids(cls, value: tuple[Line, ...] | tuple[Sku, ...]) -> tuple[Line, ...] | tuple[Sku, ...]:
        ids = [x.id if isinstance(x, Line) else x.code for x in value]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate ids: {dupes}")
        return value

    @model_validator(mode="after")
    def _default_prefix(self) -> PlantConfig:
        if not self.object_prefix:
            object.__setattr__(self, "object_prefix", self.id)
        return self

    @property
    def line_ids(self) -> list[str]:
        return [ln.id for ln in self.lines]

    @property
    def sku_codes(self) -> list[str]:
        return [s.code for s in self.skus]

    def camera_signature(self, line_id: str) -> str:
        """A short id of the camera a line sees through: lines with the same camera share
        learned image bounds, a line with its own camera gets its own."""
        cam = self.camera_for(line_id)
        digest = hashlib.sha256(cam.model_dump_json().encode()).hexdigest()[:8]
        return f"{cam.model}-{digest}"

    def camera_for(self, line_id: str) -> Camera:
        """The plant camera with the line's overrides merged in (only the fields the line sets)."""
        for line in self.lines:
            if line.id == line_id:
                if line.camera is None:
                    return self.camera
                return self.camera.model_copy(update=line.camera.model_dump(exclude_unset=True))
        raise ConfigError(f"plant {self.id}: unknown line {line_id!r}; known lines: {self.line_ids}")

    @property
    def registered_model_name(self) -> str:
        return f"{self.id}.{self.recipe.task}"

    def sha256(self) -> str:
        """Checksum of the resolved config (recorded with every model version as ``config.sha256``)."""
        payload = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()


# --------------------------------------------------------------------------------------------------


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Mappings merge key by key; anything else in ``override`` replaces the base value."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def _depth(data: Any, loc: tuple[str | int, ...]) -> int:
    """How many leading parts of ``loc`` exist in ``data``."""
    node, depth = data, 0
    for part in loc:
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and part < len(node)
        if in_dict or in_list:
            node = node[part]
        else:
            break
        depth += 1
    return depth


def _format_errors(exc: ValidationError, files: list[tuple[str, dict[str, Any]]]) -> str:
    """``file: field: problem`` per error, blaming the file that set the deepest part of the field
    (the later file wins a tie, since it overrides)."""
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        source = max(reversed(files), key=lambda f: _depth(f[1], loc))[0]
        field = ".".join(str(p) for p in loc) or "(top level)"
        msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"{source}: {field}: {msg}")
    return "\n".join(lines)


def configs_dir() -> Path:
    from andon.settings import get_settings

    return get_settings().configs_dir


def list_plants(root: Path | None = None) -> list[str]:
    """Plant ids that have a config file, sorted."""
    root = root or configs_dir()
    if not (root / "plants").is_dir():
        raise ConfigError(f"{root}: no plants/ folder here; set ANDON_CONFIGS_DIR to the folder holding base.yaml")
    return sorted(p.stem for p in (root / "plants").glob("*.yaml"))


def load_plant(plant: str, root: Path | None = None) -> PlantConfig:
    """Merge ``base.yaml`` with ``plants/<plant>.yaml`` and validate the result."""
    root = root or configs_dir()
    if not PLANT_ID_RE.match(plant):
        raise UnknownPlantError(f"invalid plant id {plant!r}: use lowercase letters, digits and dashes")
    plant_file = root / "plants" / f"{plant}.yaml"
    if not plant_file.is_file():
        known = ", ".join(list_plants(root)) or "none"
        raise UnknownPlantError(f"unknown plant {plant!r}: no {plant_file} (known plants: {known})")
    base_raw = read_yaml(root / "base.yaml")
    plant_raw = read_yaml(plant_file)
    if plant_raw.get("id", plant) != plant:
        raise ConfigError(f"plants/{plant}.yaml: id: must match the file name, got {plant_raw['id']!r}")
    merged = deep_merge(base_raw, plant_raw)
    merged["id"] = plant
    try:
        return PlantConfig.model_validate(merged)
    except ValidationError as exc:
        files = [("base.yaml", base_raw), (f"plants/{plant}.yaml", plant_raw)]
        raise ConfigError(_format_errors(exc, files)) from None


def load_all_plants(root: Path | None = None) -> dict[str, PlantConfig]:
    """Every plant, validated; all errors collected before raising."""
    plants: dict[str, PlantConfig] = {}
    problems: list[str] = []
    for plant in list_plants(root):
        try:
            plants[plant] = load_plant(plant, root)
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError("\n".join(problems))
    return plants
