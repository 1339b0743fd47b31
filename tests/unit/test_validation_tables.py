"""Table rules on bad input: each problem fails its own named rule, nothing crashes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from andon.config import load_plant
from andon.validation.profile import learn_table
from andon.validation.spec import ColumnRule, TableSpec, metadata_spec, sensor_spec
from andon.validation.tables import validate_table

CFG = load_plant("plant-b")


def _metadata(n: int = 100, defects: int = 5) -> pd.DataFrame:
    ts = pd.date_range("2026-11-02 06:00", periods=n, freq="100ms", tz="UTC")
    return pd.DataFrame(
        {
            "part_id": [f"p{i:04d}" for i in range(n)],
            "timestamp": ts,
            "line": "line-1",
            "sku": "DSC-100",
            "label": ["defect" if i < defects else "ok" for i in range(n)],
            "defect_type": "none",
            "image_key": [f"plant-b/line-1/raw/d/b/images/p{i:04d}.png" for i in range(n)],
            "sha256": "0" * 64,
            "source": "synthetic",
        }
    )


def _failed(frame: pd.DataFrame, spec: TableSpec | None = None, profile=None) -> dict[str, object]:  # type: ignore[no-untyped-def]
    report = validate_table(frame, spec or metadata_spec(CFG), profile)
    return {r.rule: r for r in report.failed}


def test_clean_metadata_passes() -> None:
    report = validate_table(_metadata(), metadata_spec(CFG))
    assert report.success, [r.rule for r in report.failed]
    assert len(report.results) >= 15


@pytest.mark.parametrize(
    ("mutate", "rule"),
    [
        (lambda f: f.assign(sku=["NEW-1"] + ["DSC-100"] * 99), "sku: in {DSC-100, DSC-120, RNG-080}"),
        (lambda f: f.assign(line=["line-9"] + ["line-1"] * 99), "line: in {line-1, line-2, line-3}"),
        (lambda f: f.assign(label=["broken"] + ["ok"] * 99), "label: in {ok, defect}"),
        (lambda f: pd.concat([f, f.iloc[[3]]], ignore_index=True), "part_id: unique"),
        (lambda f: f.iloc[::-1].reset_index(drop=True), "timestamp: never goes backwards per line"),
        (lambda f: f.assign(timestamp=f.timestamp.dt.tz_localize(None)), "timestamp: timezone-aware"),
        (lambda f: f.assign(label="defect"), "defect rate: within [2.0%, 8.0%] (n=100: [0.00%, 16.93%])"),
        (lambda f: f.drop(columns=["sku"]), "schema: columns match the spec (no extras)"),
        (lambda f: f.assign(operator="x"), "schema: columns match the spec (no extras)"),
        (lambda f: f.iloc[:0], "table: at least one row"),
        (lambda f: f.assign(part_id=[None, *f.part_id[1:]]), "part_id: not null"),
    ],
)
def test_each_problem_fails_its_rule(mutate, rule: str) -> None:  # type: ignore[no-untyped-def]
    failed = _failed(mutate(_metadata()))
    assert rule in failed, f"expected {rule!r}, got {list(failed)}"


def test_rate_bounds_allow_for_the_batch_size() -> None:
    """11 defects in 100 parts at a 2-8 % line is sampling noise; 0.2 % of 10,000 parts is not."""
    assert validate_table(_metadata(100, defects=11), metadata_spec(CFG)).success
    failed = _failed(_metadata(10_000, defects=20))
    assert "defect rate: within [2.0%, 8.0%] (n=10000: [1.54%, 8.89%])" in failed


def test_string_timestamps_naive_mixed_and_garbage() -> None:
    frame = _metadata(6, defects=0)
    frame["timestamp"] = [
        "2026-11-02T06:00:00+00:00",
        "2026-11-02T07:00:01+01:00",  # same instant family, other offset: fine
        "2026-11-02T06:00:02",  # naive
        "yesterday-ish",  # unparseable
        "2026-11-02T05:00:03Z",  # earlier than the previous parsed one: goes backwards
        "2026-11-02T06:00:04Z",
    ]
    spec = metadata_spec(CFG).model_copy(update={"rates": ()})
    failed = _failed(frame, spec)
    assert failed["timestamp: timezone-aware"].examples == [{"part_id": "p0002", "timestamp": "2026-11-02T06:00:02"}]
    assert failed["timestamp: parseable"].examples == [{"part_id": "p0003", "timestamp": "yesterday-ish"}]
    assert [e["part_id"] for e in failed["timestamp: never goes backwards per line"].examples] == ["p0004"]


def test_monotonic_is_per_line() -> None:
    """Two lines interleaved: each increases on its own, so the table passes."""
    frame = _metadata(10, defects=0)
    frame["line"] = ["line-1", "line-2"] * 5
    frame.loc[frame.line == "line-2", "timestamp"] -= pd.Timedelta(hours=1)
    assert "timestamp: never goes backwards per line" not in _failed(frame)


def test_numeric_columns_nan_inf_strings_and_ranges() -> None:
    spec = sensor_spec(CFG)
    n = 50
    frame = pd.DataFrame(
        {
            "part_id": [f"p{i}" for i in range(n)],
            "timestamp": pd.date_range("2026-11-02", periods=n, freq="s", tz="UTC"),
            "line": "line-1",
            "sku": "DSC-100",
            **{name: np.full(n, r.nominal) for name, r in CFG.sensors.items()},
            "tool_wear_min": np.arange(n, dtype=float),
            **{f: np.zeros(n, dtype=int) for f in ("TWF", "HDF", "PWF", "OSF", "RNF", "machine_failure")},
        }
    )
    assert validate_table(frame, spec).success
    bad = frame.astype({"temperature_c": object, "pressure_bar": object})
    bad.loc[1, "temperature_c"] = "hot"
    bad.loc[2, "temperature_c"] = np.inf
    bad.loc[3, "pressure_bar"] = np.nan
    bad.loc[4, "vibration_mm_s"] = 99.0  # above the 25 mm/s physical limit
    bad.loc[5, "HDF"] = 2
    failed = _failed(bad, spec)
    assert [e["temperature_c"] for e in failed["temperature_c: numeric (no text, no inf)"].examples] == ["hot", np.inf]
    assert failed["pressure_bar: not null"].unexpected_count == 1
    assert failed["vibration_mm_s: physical range [0, 25]"].examples == [{"part_id": "p4", "vibration_mm_s": 99.0}]
    assert "HDF: 0 or 1" in failed


def test_learned_bounds_catch_a_shift_and_missing_values() -> None:
    rng = np.random.default_rng(0)
    spec = TableSpec(name="t", columns={"x": ColumnRule(kind="number"), "y": ColumnRule(max_missing=0.5)})
    reference = pd.DataFrame({"x": rng.normal(20, 2, 2000), "y": rng.normal(5, 1, 2000)})
    profile = learn_table(reference, spec, min_batch_rows=100)
    healthy = pd.DataFrame({"x": rng.normal(20, 2, 100), "y": rng.normal(5, 1, 100)})
    assert validate_table(healthy, spec, profile).success
    shifted = healthy.assign(x=healthy.x + 1.5)  # 0.75 sigma: a sensor offset
    holey = healthy.assign(y=healthy.y.where(rng.uniform(size=100) > 0.3))
    assert any("x: mean within learned" in r for r in _failed(shifted, spec, profile))
    assert any("y: missing rate at most" in r for r in _failed(holey, spec, profile))
