from datetime import UTC, datetime

import numpy as np
import pytest

from andon.config import Sku, load_plant
from andon.data.batches import list_raw_batches, parquet_to_frame, sha256_bytes
from andon.errors import ConfigError, DataError
from andon.storage import LocalObjectStore
from andon.synth.images import DEFECT_TYPES, Drift, Optics, render_part, render_part_with_mask
from andon.synth.mes import MES_EVENT_TYPES, mes_events
from andon.synth.plant import synthesize_plant
from andon.synth.sensors import FAILURE_TYPES, SensorDrift, sensor_frame

START = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)
DISC = Sku(code="DSC-100", shape="disc", size=0.8, holes=1)


def _sharpness(img: np.ndarray) -> float:
    lap = img[1:-1, 1:-1] * 4.0 - img[:-2, 1:-1] - img[2:, 1:-1] - img[1:-1, :-2] - img[1:-1, 2:]
    return float(lap.var())


def test_render_is_a_pure_function() -> None:
    a = render_part(3, 17, 128, DISC, "scratch")
    assert a.shape == (128, 128) and a.dtype == np.uint8
    assert np.array_equal(a, render_part(3, 17, 128, DISC, "scratch"))
    assert not np.array_equal(a, render_part(3, 18, 128, DISC, "scratch"))


@pytest.mark.parametrize("kind", DEFECT_TYPES)
def test_defect_is_local_and_visible(kind: str) -> None:
    """Same part with and without the defect differs only where the defect mask says."""
    img, mask = render_part_with_mask(5, 2, 128, DISC, kind, Optics(noise_std=0.0))
    clean, none_mask = render_part_with_mask(5, 2, 128, DISC, None, Optics(noise_std=0.0))
    assert not none_mask.any()
    assert 5 <= mask.sum() <= 0.1 * mask.size, f"{kind}: defect covers {mask.sum()} px"
    diff = np.abs(img.astype(int) - clean.astype(int))
    assert diff[mask].mean() > 30, f"{kind} is too faint to learn"
    assert diff[~mask].max() <= 30


@pytest.mark.parametrize("shape", ["ring", "disc", "plate"])
def test_every_defective_part_shows_its_defect(shape: str) -> None:
    """A defect drawn into a hole or off the part would be a "defect" no one can see: label noise
    that caps every model's escape rate. Each defective part shows at least a few changed pixels."""
    sku = Sku(code="X", shape=shape, size=0.75, holes=4)  # type: ignore[arg-type]
    for i in range(60):
        kind = DEFECT_TYPES[i % len(DEFECT_TYPES)]
        _, mask = render_part_with_mask(11, i, 64, sku, kind, Optics(noise_std=0.0))
        assert mask.sum() >= 4, (shape, i, kind)


def test_drift_knobs_move_the_statistics_they_should() -> None:
    base = np.stack([render_part(1, i, 128, DISC, None, Optics()) for i in range(8)]).astype(float)

    def render(**drift: object) -> np.ndarray:
        optics = Optics.from_config(
            load_plant("plant-b").camera, load_plant("plant-b").lighting, "standard", Drift(**drift)
        )  # type: ignore[arg-type]
        return np.stack([render_part(1, i, 128, DISC, None, optics) for i in range(8)]).astype(float)

    plain = render()
    assert render(brightness=0.6).mean() < 0.7 * plain.mean()
    sharp = [_sharpness(render_part(1, i, 128, DISC, None, Optics(noise_std=0))) for i in range(4)]
    soft = [_sharpness(render_part(1, i, 128, DISC, None, Optics(noise_std=0, blur_sigma=2))) for i in range(4)]
    assert np.mean(soft) < 0.3 * np.mean(sharp)
    # through the sensor noise of a real camera the drop is smaller but still there
    assert np.mean([_sharpness(x) for x in render(blur_sigma=2.0)]) < 0.95 * np.mean([_sharpness(x) for x in plain])
    assert render(noise_std=20).std() > plain.std()
    # uneven light: the right half gets brighter than the left
    uneven = render(unevenness=0.6)
    assert uneven[:, :, 64:].mean() - uneven[:, :, :64].mean() > plain[:, :, 64:].mean() - plain[:, :, :64].mean() + 10
    # a new supplier's material: coarser texture, different statistics inside the part
    supplier = np.stack([render_part(1, i, 128, DISC, None, Optics(material="supplier-b")) for i in range(8)])
    assert supplier[supplier > 90].std() > 1.4 * base[base > 90].std()
    assert render(material="supplier-b").mean() < plain.mean()
    assert base.shape == plain.shape


def test_synthesize_plant_is_deterministic_and_consistent(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = load_plant("plant-b")
    one, two = LocalObjectStore(tmp_path / "one"), LocalObjectStore(tmp_path / "two")
    kw = {"seed": 4, "start": START, "batch_size": 40, "mes_events_per_day": 200}
    b1 = synthesize_plant(cfg, one, 150, workers=1, **kw)  # type: ignore[arg-type]
    b2 = synthesize_plant(cfg, two, 150, workers=2, **kw)  # type: ignore[arg-type]
    keys1 = [o.key for o in one.list("")]
    assert keys1 == [o.key for o in two.list("")], "worker count must not change the output"
    assert all(one.get(k) == two.get(k) for k in keys1 if not k.endswith("batch.json"))
    assert b1 == b2
    assert sum(b.parts for b in b1) == 150
    assert {b.line for b in b1} == {"line-1", "line-2", "line-3"}
    assert list(list_raw_batches(one, cfg)) == sorted(b1, key=lambda b: (b.line, b.prefix))
    for b in b1:
        meta = parquet_to_frame(one.get(b.metadata_key))
        assert len(meta) == b.parts and meta["part_id"].is_unique
        assert int((meta["label"] == "defect").sum()) == b.defects
        assert set(meta["sku"]) <= set(cfg.sku_codes) and set(meta["line"]) == {b.line}
        assert str(meta["timestamp"].dt.tz) == "UTC" and meta["timestamp"].is_monotonic_increasing
        for row in meta.head(5).itertuples():
            assert sha256_bytes(one.get(row.image_key)) == row.sha256
        sensors = parquet_to_frame(one.get(b.sensors_key))
        assert list(sensors["part_id"]) == list(meta["part_id"])
    assert list(one.list("plant-b/mes/")), "MES events are written beside the batches"


def test_different_runs_never_share_or_overwrite_a_batch(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from andon.data.batches import ensure_new_or_same

    cfg = load_plant("plant-c")
    store = LocalObjectStore(tmp_path)
    plain = synthesize_plant(cfg, store, 30, seed=1, start=START, workers=1)
    before = {o.key: store.get(o.key) for o in store.list("")}
    dark = synthesize_plant(cfg, store, 30, seed=1, start=START, workers=1, drift=Drift(brightness=0.7))
    fewer = synthesize_plant(cfg, store, 20, seed=1, start=START, workers=1)
    assert len({b.batch_id for b in plain + dark + fewer}) == 3, "each run gets its own batch"
    assert all(store.get(k) == v for k, v in before.items()), "the first run's objects are untouched"
    again = synthesize_plant(cfg, store, 30, seed=1, start=START, workers=1)
    assert again == plain, "the same run twice is idempotent"
    with pytest.raises(DataError, match="already holds a different batch"):
        ensure_new_or_same(store, plain[0].prefix, "other-digest")


def test_defect_rate_new_sku_and_bad_arguments(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = load_plant("plant-c")
    store = LocalObjectStore(tmp_path)
    new = Sku(code="NEW-RING", shape="ring", size=0.8, holes=0)
    batches = synthesize_plant(cfg, store, 600, seed=1, start=START, defect_rate=0.1, new_sku=new, workers=1)
    meta = parquet_to_frame(store.get(batches[0].metadata_key))
    rate = (meta["label"] == "defect").mean()
    assert 0.06 < rate < 0.14  # binomial, n=500: 4 sigma
    assert 0.2 < (meta["sku"] == "NEW-RING").mean() < 0.4
    assert set(meta["defect_type"]) <= {"none", *DEFECT_TYPES}
    with pytest.raises(DataError, match="parts must be at least 1"):
        synthesize_plant(cfg, store, 0)
    with pytest.raises(DataError, match="defect_rate"):
        synthesize_plant(cfg, store, 5, defect_rate=1.5)
    with pytest.raises(ConfigError, match="unknown line 'line-9'"):
        synthesize_plant(cfg, store, 5, lines=["line-9"])


def test_sensor_stream_ranges_drift_and_held_back_failures() -> None:
    ranges = load_plant("plant-a").sensors
    frame = sensor_frame(ranges, 5000, seed=2, stream=0)
    for name, spec in ranges.items():
        inside = frame[name].between(spec.min, spec.max).mean()
        assert inside > 0.99, f"{name}: only {inside:.1%} inside its physical range"
    assert set(FAILURE_TYPES) <= set(frame.columns)
    assert frame["machine_failure"].sum() >= frame[list(FAILURE_TYPES)].max(axis=1).sum() > 0
    hot = sensor_frame(ranges, 5000, seed=2, stream=0, drift=SensorDrift(temperature_offset=5.0))
    assert hot["temperature_c"].mean() - frame["temperature_c"].mean() == pytest.approx(5.0, abs=0.01)
    held = sensor_frame(ranges, 5000, seed=2, stream=0, disabled_failures=("PWF", "OSF"))
    assert held["PWF"].sum() == 0 and held["OSF"].sum() == 0


def test_mes_events_are_deterministic_with_unique_ids() -> None:
    cfg = load_plant("plant-c")
    a = mes_events(cfg, START, hours=72, seed=3)
    assert a == mes_events(cfg, START, hours=72, seed=3)
    assert len(a) > 3 and len({e["message_id"] for e in a}) == len(a)
    assert {e["type"] for e in a} <= set(MES_EVENT_TYPES)
    assert [e["occurred"] for e in a] == sorted(e["occurred"] for e in a)


def test_each_drift_knob_has_one_range_for_the_library_the_cli_and_the_flow() -> None:
    import pytest

    from andon.errors import ConfigError
    from andon.flows.ingest import DriftParams
    from andon.synth import DRIFT_LIMITS
    from andon.synth.images import Drift

    for knob, (lo, hi) in DRIFT_LIMITS.items():
        with pytest.raises(ConfigError, match=knob):
            Drift(**{knob: hi + 1})
        field = DriftParams.model_json_schema()["properties"][knob]
        assert (field["minimum"], field["maximum"]) == (lo, hi), knob
    from typer.testing import CliRunner

    from andon.cli.main import app

    out = CliRunner().invoke(app, ["synth", "--plant", "plant-a", "--brightness", "4.5"])
    assert out.exit_code == 2 and "less than or equal to 4" in out.output  # the same range
