"""What a table must look like: columns, physical ranges, categorical sets, ids, timestamps,
rates. Specs come from plant configs (metadata and sensor tables) or from YAML files in
``configs/tables/`` (external data sets such as AI4I 2020 and SECOM)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from andon.config import PlantConfig
from andon.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnRule(_Strict):
    kind: Literal["number", "integer", "category", "flag", "text", "timestamp"] = "number"
    min: float | None = Field(default=None, description="physically plausible minimum")
    max: float | None = Field(default=None, description="physically plausible maximum")
    values: tuple[str | int, ...] | None = Field(default=None, description="allowed values (category)")
    required: bool = Field(default=True, description="the column must be present")
    max_missing: float = Field(default=0.0, ge=0, le=1, description="largest share of missing values")
    learn: bool = Field(default=True, description="learn mean / missing-rate bounds (off for counters)")

    @model_validator(mode="after")
    def _range(self) -> ColumnRule:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} > max {self.max}")
        if self.kind == "category" and not self.values:
            raise ValueError("a category column needs values")
        return self


class RateRule(_Strict):
    """The share of rows whose ``column`` is in ``positive`` must lie within ``bounds``.

    The bounds are long-run rates; a batch fails only when its rate is outside them by more
    than its sampling error (99.9 % binomial margin at the bound), so a 100-part batch with 11
    defects at a 2-8 % line is not an alarm, while 0.2 % over 10,000 parts is.
    """

    column: str
    positive: tuple[str | int, ...]
    bounds: tuple[float, float]
    name: str = Field(default="", description="how reports call it, e.g. 'defect rate'")

    @model_validator(mode="after")
    def _bounds(self) -> RateRule:
        lo, hi = self.bounds
        if not 0 <= lo <= hi <= 1:
            raise ValueError(f"bounds must satisfy 0 <= low <= high <= 1, got {lo}, {hi}")
        return self


class TableSpec(_Strict):
    name: str
    id_column: str | None = None
    timestamp_column: str | None = None
    timestamp_format: str | None = Field(default=None, description="strftime format; default ISO 8601")
    assume_timezone: str | None = Field(
        default=None, description="localize naive timestamps to this zone instead of rejecting them"
    )
    group_column: str | None = Field(default=None, description="timestamps increase within each group")
    increasing: tuple[str, ...] = Field(default=(), description="columns that must strictly increase")
    columns: dict[str, ColumnRule] = Field(default_factory=dict)
    allow_extra_columns: bool = False
    learn_all_numeric: bool = Field(
        default=True, description="learn mean and missing-rate bounds for every numeric column"
    )
    rates: tuple[RateRule, ...] = ()

    def numeric_columns(self) -> list[str]:
        return [c for c, r in self.columns.items() if r.kind in ("number", "integer") and r.learn]


def metadata_spec(cfg: PlantConfig, purpose: str = "production") -> TableSpec:
    """The metadata table of a raw image batch at this plant. A production batch's defect rate must
    lie within the plant's bounds; a curated training set may be enriched with defects (its rate is
    recorded in its dataset version, not checked)."""
    lo, hi = cfg.data.defect_rate_bounds
    rates = (RateRule(column="label", positive=("defect",), bounds=(lo, hi), name="defect rate"),)
    return TableSpec(
        name="metadata",
        id_column="part_id",
        timestamp_column="timestamp",
        group_column="line",
        columns={
            "part_id": ColumnRule(kind="text"),
            "timestamp": ColumnRule(kind="timestamp"),
            "line": ColumnRule(kind="category", values=tuple(cfg.line_ids)),
            "sku": ColumnRule(kind="category", values=tuple(cfg.sku_codes)),
            "label": ColumnRule(kind="category", values=tuple(cfg.recipe.classes)),
            "defect_type": ColumnRule(kind="text", required=False),
            "image_key": ColumnRule(kind="text"),
            "sha256": ColumnRule(kind="text"),
            "source": ColumnRule(kind="text", required=False),
        },
        learn_all_numeric=False,
        rates=rates if purpose == "production" else (),
    )


def sensor_spec(cfg: PlantConfig) -> TableSpec:
    """The per-part sensor table of a synthetic plant: configured physical ranges."""
    columns: dict[str, ColumnRule] = {
        "part_id": ColumnRule(kind="text"),
        "timestamp": ColumnRule(kind="timestamp"),
        "line": ColumnRule(kind="category", values=tuple(cfg.line_ids)),
        "sku": ColumnRule(kind="text"),
    }
    for name, rng in cfg.sensors.items():
        columns[name] = ColumnRule(kind="number", min=rng.min, max=rng.max)
    columns["tool_wear_min"] = ColumnRule(kind="number", min=0, max=300, learn=False)  # a ramp, not a level
    for flag in ("TWF", "HDF", "PWF", "OSF", "RNF", "machine_failure"):
        columns[flag] = ColumnRule(kind="flag")
    return TableSpec(
        name="sensors",
        id_column="part_id",
        timestamp_column="timestamp",
        group_column="line",
        columns=columns,
    )


def tables_dir() -> Path:
    from andon.config import configs_dir

    return configs_dir() / "tables"


def load_table_spec(name_or_path: str | Path) -> TableSpec:
    """A spec from ``configs/tables/<name>.yaml`` or a path."""
    import yaml

    path = Path(name_or_path)
    if not path.suffix:
        path = tables_dir() / f"{name_or_path}.yaml"
    try:
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        known = ", ".join(sorted(p.stem for p in tables_dir().glob("*.yaml"))) or "none"
        raise ConfigError(f"{path}: no such table spec (known: {known})") from None
    try:
        return TableSpec.model_validate(raw)
    except ValidationError as exc:
        problems = "\n".join(f"{path.name}: {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(problems) from None
