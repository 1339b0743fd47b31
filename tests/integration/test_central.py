"""The central baseline and plant fine-tuning for real, under the Prefect harness: two synthetic
plants contribute datasets by reference, central.<task> is trained on the pool, each plant
fine-tunes from it and reports back, and the cross-plant report scores every champion on every
plant's golden set."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from test_training_lifecycle import _dataset

from andon.storage import open_store

pytestmark = pytest.mark.slow


@pytest.fixture
def small_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """configs/ whose standard recipe trains in seconds (64 px, 2 epochs)."""
    from andon.settings import REPO_ROOT, reset_settings

    root = tmp_path / "configs"
    shutil.copytree(REPO_ROOT / "configs", root)
    base = yaml.safe_load((root / "base.yaml").read_text())
    base["recipe"]["image"]["size"] = 64
    base["recipe"]["training"].update(epochs=2, batch_size=32)
    (root / "base.yaml").write_text(yaml.safe_dump(base))
    monkeypatch.setenv("ANDON_CONFIGS_DIR", str(root))
    reset_settings()
    return root


def test_central_baseline_fine_tune_and_cross_plant_report(
    prefect_harness: None,
    andon_home: Path,
    mlflow_tracking_uri: str,
    small_recipe: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from andon.config import load_plant
    from andon.errors import DataError
    from andon.flows.governance import central_baseline_flow, fine_tune_flow, governance_report_flow
    from andon.governance.central import fine_tune, plant_reports
    from andon.lifecycle.promotion import promote
    from andon.lifecycle.registry import CHAMPION, alias_version, version_info

    store = open_store()
    ids = {p: _dataset(store, seed, parts=300, cfg=load_plant(p)) for p, seed in (("plant-b", 3), ("plant-c", 4))}
    # without a central champion (none yet, or none passed the fleet's rules) a plant trains from scratch
    alone = fine_tune(store, load_plant("plant-b"), [ids["plant-b"]])
    tags = version_info("plant-b.surface-defects", alone.version or 0).tags
    assert tags["parent_version"] == "" and tags["central.parent"].startswith("none")
    central = central_baseline_flow({p: [i] for p, i in ids.items()})
    assert central["model"] == "central.surface-defects" and central["version"] == 1
    info = version_info("central.surface-defects", 1)
    assert info.tags["plant"] == "central" and info.params["model.name"] == "small_cnn"
    pooled = json.loads(store.get(f"datasets/central/{info.tags['data.manifest_sha256']}.json"))
    assert len(pooled["objects"]) == 600 and {o["plant"] for o in pooled["objects"]} == {"plant-b", "plant-c"}
    assert all(o["key"].startswith(o["plant"] + "/") for o in pooled["objects"])  # referenced, not copied
    # what the center keeps about a plant's data is anonymized: hashes, counts, statistics, no keys
    summary = json.loads(store.get(f"central/manifests/plant-b/{ids['plant-b']}.json"))
    assert summary["objects"] == 300 and len(summary["object_sha256"]) == 300
    assert "brightness_mean" in summary["image_statistics"] and "plant-b/" not in json.dumps(summary)
    assert store.exists(f"central/contributions/plant-c/{ids['plant-c']}.json")
    if not central["champion"]:  # the 2-epoch test recipe may miss the quality targets
        from andon.lifecycle.registry import set_alias

        set_alias("central.surface-defects", CHAMPION, 1)

    for plant in ids:
        result = fine_tune_flow(plant, [ids[plant]])
        version = result["training"]["version"]
        tags = version_info(f"{plant}.surface-defects", version).tags
        assert (
            tags["parent_version"] == "central.surface-defects/1" and tags["central.parent"] == tags["parent_version"]
        )
        if not result["promotion"]["passed"]:
            promote(store, load_plant(plant), force=True, reason="test: a champion for the report")
        assert alias_version(f"{plant}.surface-defects", CHAMPION) == version
    reports = plant_reports("surface-defects")
    assert sorted(r["plant"] for r in reports) == ["plant-b", "plant-c"]
    assert all({"test_escape_rate", "test_overkill_rate", "test_accuracy"} <= set(r["metrics"]) for r in reports)

    # a plant whose recipe changed the architecture cannot start from the baseline
    cfg = load_plant("plant-b")
    wide = cfg.recipe.model_copy(update={"model": cfg.recipe.model.model_copy(update={"width": 32})})
    with pytest.raises(DataError, match="cannot start from it"):
        fine_tune(store, cfg, [ids["plant-b"]], recipe=wide)

    # a trial of one plant's innovation at another plant: trained unregistered, compared on its golden set
    from andon.governance.report import trial
    from andon.lifecycle.registry import list_versions

    before = len(list_versions("plant-c.surface-defects"))
    (row,) = trial(
        store, [load_plant("plant-c")], {"training": {"learning_rate": 0.001}}, {"plant-c": [ids["plant-c"]]}
    )
    assert row["plant"] == "plant-c" and row["verdict"] in ("helps", "hurts", "no difference")
    assert abs(row["escape_delta"] - (row["trial_escape"] - row["champion_escape"])) < 1e-3
    assert abs(row["overkill_delta"] - (row["trial_overkill"] - row["champion_overkill"])) < 1e-3
    assert len(list_versions("plant-c.surface-defects")) == before  # a trial registers nothing
    report = governance_report_flow(["plant-b", "plant-c"])
    assert set(report["matrix"]) == {"plant-b", "plant-c"}
    for src, row in report["matrix"].items():  # escape and overkill of each champion at its own operating point
        assert set(row) == {"plant-b", "plant-c"}, (src, row)
        assert all(0 <= c["escape_rate"] <= 1 and 0 <= c["overkill_rate"] <= 1 for c in row.values()), (src, row)
    # each cell is kept with the champion's version: the next report reads it instead of scoring again
    from andon.governance import report as report_module

    cached = list(store.list("governance/matrix/"))
    assert len(cached) == 2, cached
    calls: list[str] = []
    real = report_module._cell
    monkeypatch.setattr(report_module, "_cell", lambda *a: calls.append(a[2]) or real(*a))
    again = report_module.build_report(store, [load_plant("plant-b"), load_plant("plant-c")])
    assert calls == [] and again.matrix == report["matrix"]
    html = store.get(report["key"]).decode()
    assert "generalization matrix" in html or "Generalization" in html
    assert "data:image/png;base64," in html
    by = {r["plant"]: r for r in report["plants"]}
    assert by["plant-b"]["version"] is not None and by["plant-b"]["escape_elsewhere"] is not None
    assert "generalization matrix: escape rate" in html or "escape" in html
    # monitoring never ran at these plants: the policy check says so
    assert {f["rule"] for f in report["findings"] if f["plant"] == "plant-b"} >= {"monitoring"}
