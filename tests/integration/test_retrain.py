"""The retrain flow for real, under the Prefect harness: a trained champion, parts scored and
reviewed, an MES event -> policy -> the champion's dataset plus the reviewed parts through the
gate -> a challenger fine-tuned from the champion -> the promotion gate; the same event again is
a duplicate; the sensor model learns a logged failure type."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from test_training_lifecycle import _dataset

from andon.labeling.labels import ReviewLog
from andon.storage import open_store

pytestmark = pytest.mark.slow

SMALL_PLANT_B = """
recipe:
  image: {size: 64}
  training: {epochs: 2, batch_size: 32}
retrain: {fine_tune_epochs: 1, min_new_labels: 10}
"""


@pytest.fixture
def small_configs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """configs/ with plant-b's recipe cut to seconds (the flow loads the plant by name)."""
    from andon.settings import REPO_ROOT, reset_settings

    root = tmp_path / "configs"
    shutil.copytree(REPO_ROOT / "configs", root)
    with (root / "plants" / "plant-b.yaml").open("a") as fh:
        fh.write(SMALL_PLANT_B)
    monkeypatch.setenv("ANDON_CONFIGS_DIR", str(root))
    reset_settings()
    return root


def test_an_mes_event_retrains_fine_tunes_and_gates_and_a_repeat_is_a_duplicate(
    prefect_harness: None, andon_home: Path, mlflow_tracking_uri: str, small_configs: Path
) -> None:
    from andon.config import load_plant
    from andon.data.batches import parquet_to_frame
    from andon.flows.retrain import retrain_flow
    from andon.lifecycle.promotion import promote
    from andon.lifecycle.registry import CHAMPION, alias_version, version_info
    from andon.lifecycle.retraining import load_state
    from andon.scoring.batch import score_batch
    from andon.synth.plant import synthesize_plant
    from andon.training.run import train_plant

    store = open_store()
    cfg = load_plant("plant-b")
    assert cfg.recipe.image.size == 64 and cfg.retrain.fine_tune_epochs == 1
    out = train_plant(store, cfg, [_dataset(store, 7)])
    promote(store, cfg, force=True, reason="test champion")
    champion = alias_version(out.model_name, CHAMPION)

    # production: 60 parts scored, 40 reviewed (one image was corrupted on disk since)
    (batch,) = synthesize_plant(cfg, store, 60, seed=21, start=datetime.now(UTC), lines=["line-1"], workers=1)
    score_batch(store, cfg, batch.prefix, explain=False)
    meta = parquet_to_frame(store.get(batch.metadata_key))
    reviewed = meta.iloc[:40]
    ReviewLog(store, cfg.id).append(
        {"part_id": r.part_id, "label": r.label, "reviewed_at": datetime.now(UTC), "reviewer": "qa"}
        for r in reviewed.itertuples()
    )
    store.put(reviewed.iloc[0].image_key, b"\x89PNG\r\n garbage", "image/png")

    details = {"sku": "DSC-140", "line": "line-1", "message_id": "MES-77"}
    result = retrain_flow("plant-b", "vision", "mes.sku.introduced", "event-1", details)
    decision = result["decision"]
    assert decision["go"] and decision["reasons"] == []
    data = result["dataset"]
    assert data["new_items"] == 39 and [r["part_id"] for r in data["rejected"]] == [reviewed.iloc[0].part_id]
    assert data["base_dataset"] == out.manifest_id and data["dataset_id"] != out.manifest_id
    assert sum(data["counts"].values()) == 360 + 39  # the champion's dataset plus the reviewed parts
    new = version_info(out.model_name, result["version"])
    assert new.tags["parent_version"] == f"{out.model_name}/{champion}"  # fine-tuned from the champion
    assert new.tags["retrain.trigger"] == "mes.sku.introduced" and new.tags["retrain.event_id"] == "event-1"
    assert isinstance(result["promoted"], bool)
    assert version_info(out.model_name, champion).tags["retrain.last_decision"] == "retrain"

    # the gateway re-delivers the same event after a Prefect restart: recognised, nothing trains
    again = retrain_flow("plant-b", "vision", "mes.sku.introduced", "event-1", details)
    assert not again["decision"]["go"] and "duplicate event event-1" in again["decision"]["reasons"][0]
    assert "version" not in again
    # a different event inside the cooldown waits
    drift = retrain_flow("plant-b", "vision", "andon.drift.detected", "event-2", {"severity": "high"})
    assert any(r.startswith("cooldown") for r in drift["decision"]["reasons"])
    state = load_state(store, "plant-b")
    assert set(state["events"]) == {"event-1", "event-2"}
    assert len(list(store.list("retraining/plant-b/decisions/"))) == 3


def test_the_sensor_model_learns_a_logged_failure_type(
    prefect_harness: None, andon_home: Path, mlflow_tracking_uri: str
) -> None:
    from andon.config import load_plant
    from andon.flows.retrain import retrain_flow
    from andon.lifecycle.registry import CHAMPION, alias_version, model_name, set_alias, version_info
    from andon.training.sensor import store_table, train_sensor

    path = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ai4i2020" / "ai4i2020.csv"
    if not path.exists():
        pytest.skip(f"{path} is not here")
    store = open_store()
    cfg = load_plant("plant-a")
    manifest_id, _ = store_table(store, cfg, path)
    held = train_sensor(store, cfg, manifest_id, hold_out=("TWF",), epochs=5)
    set_alias(held.model_name, CHAMPION, held.version)
    assert "TWF" not in version_info(held.model_name, held.version).tags["targets"]

    unknown = retrain_flow("plant-a", "machine-failure", "mes.failure_type.logged", "ft-0", {"failure_type": "XYZ"})
    assert not unknown["decision"]["go"] and "not in the sensor table" in unknown["decision"]["reasons"][0]
    result = retrain_flow("plant-a", "machine-failure", "mes.failure_type.logged", "ft-1", {"failure_type": "TWF"})
    assert result["decision"]["go"], result["decision"]
    sensor = result["sensor"]
    name = model_name("plant-a", "machine-failure")
    assert sensor["version"] == held.version + 1 and sensor["held_out"] == []
    assert "TWF" in version_info(name, sensor["version"]).tags["targets"].split(",")
    # promoted when it detects TWF at all and keeps its F1; else refused with the reason recorded
    champion = alias_version(name, CHAMPION)
    assert champion == (sensor["version"] if sensor["promoted"] else held.version)
    assert sensor["promoted"] or sensor["violations"]
