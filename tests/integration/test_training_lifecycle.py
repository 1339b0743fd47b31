"""Train -> register -> promote -> rollback -> diff, for real: torch training on small synthetic
data, a temp MLflow SQLite store, the flows under the Prefect harness, the CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from andon import events
from andon.cli.main import app
from andon.config import PlantConfig, load_plant
from andon.data.batches import parquet_to_frame
from andon.data.datasets import build_manifest, save_manifest
from andon.errors import DataError, ServiceError, UnknownPlantError
from andon.lifecycle.registry import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS,
    RegistryError,
    alias_version,
    register_version,
    version_info,
)
from andon.storage import ObjectStore, open_store
from andon.synth.plant import synthesize_plant

pytestmark = pytest.mark.slow
CFG = load_plant("plant-b")
NAME = "plant-b.surface-defects"
SMALL = CFG.recipe.model_copy(
    update={
        "image": CFG.recipe.image.model_copy(update={"size": 64}),
        "training": CFG.recipe.training.model_copy(update={"epochs": 2, "batch_size": 32}),
        "augmentations": CFG.recipe.augmentations[:2],
    }
)


def _dataset(
    store: ObjectStore, seed: int, parts: int = 360, rate: float = 0.35, cfg: PlantConfig | None = None
) -> str:
    """A dataset version straight from synthetic metadata (rich in defects, so 2 epochs learn);
    plant-b unless ``cfg`` says otherwise."""
    cfg = cfg or CFG
    batches = synthesize_plant(
        cfg,
        store,
        parts,
        seed=seed,
        defect_rate=rate,
        start=datetime(2026, 11, 10, seed, tzinfo=UTC),
        lines=[cfg.line_ids[0]],
        batch_size=10_000,
        workers=1,
    )
    objects = []
    for b in batches:
        meta = parquet_to_frame(store.get(b.metadata_key))
        objects += [
            {"key": r.image_key, "sha256": r.sha256, "label": r.label, "part_id": r.part_id} for r in meta.itertuples()
        ]
    manifest = build_manifest(cfg.id, objects, sources=[b.prefix for b in batches])
    save_manifest(store, manifest)
    return manifest.id


def _events(name: str, since: datetime, at_least: int) -> list[dict]:
    """The events of that name on the test's Prefect server since ``since``; flows emit through a
    background worker, so wait (at most 60 s) until ``at_least`` arrived."""
    import time

    import httpx
    from prefect.settings import PREFECT_API_URL

    body = {"filter": {"event": {"name": [name]}, "occurred": {"since": since.isoformat()}}, "limit": 50}
    for _ in range(120):
        found = httpx.post(f"{PREFECT_API_URL.value()}/events/filter", json=body, timeout=30).json()["events"]
        if len(found) >= at_least:
            break
        time.sleep(0.5)
    return found


def _run_and_logs(flow_run_id: str, wait_for: str) -> tuple[dict, list[str]]:
    """A flow run and its log lines (sent by a background worker: wait, at most 60 s, for a line
    with ``wait_for``)."""
    import time

    import httpx
    from prefect.settings import PREFECT_API_URL

    api = PREFECT_API_URL.value()
    body = {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200}
    for _ in range(120):
        lines = [r["message"] for r in httpx.post(f"{api}/logs/filter", json=body, timeout=30).json()]
        if any(wait_for in line for line in lines):
            break
        time.sleep(0.5)
    return httpx.get(f"{api}/flow_runs/{flow_run_id}", timeout=30).json(), lines


def mlflow_artifact(run_id: str, path: str) -> str:
    import mlflow

    return str(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path))


@pytest.fixture
def lab(andon_home: Path, mlflow_tracking_uri: str) -> ObjectStore:
    return open_store()


def test_lifecycle_through_flows_and_cli(prefect_harness: None, lab: ObjectStore) -> None:
    import mlflow

    from andon.flows.train import promote_flow, train_flow
    from andon.training import run as training_run

    since = datetime.now(UTC)
    first, second = _dataset(lab, 1), _dataset(lab, 2)
    original = training_run.train_plant

    def small(*args, **kwargs):  # type: ignore[no-untyped-def]
        return original(*args, **{**kwargs, "recipe": SMALL})

    training_run.train_plant = small  # the flow trains the shrunk recipe (the real one is tested in benchmarks)
    try:
        state = train_flow(plant="plant-b", dataset_ids=[first], return_state=True)
        v1 = state.result()
        assert v1["version"] == 1 and alias_version(NAME, CHALLENGER) == 1
        # the run has a readable name, and its Logs tab shows the library's progress
        run, lines = _run_and_logs(str(state.state_details.flow_run_id), "registered as challenger")
        assert run["name"] == "plant-b train", run["name"]
        assert any("plant-b epoch 1/2: train loss" in line for line in lines), lines
        info = version_info(NAME, 1)
        for tag in ("data.manifest_sha256", "code.commit", "code.dirty", "config.sha256", "recipe", "plant"):
            assert info.tags[tag], tag
        assert info.tags["data.manifest_sha256"] == first and info.params["image.size"] == "64"
        run = mlflow.get_run(info.run_id)
        assert run.inputs.dataset_inputs[0].dataset.digest == first[:36]
        assert {"val_loss", "test_accuracy", "test_defect_recall", "test_ece", "test_roc_auc"} <= set(run.data.metrics)
        arts = {a.path for a in mlflow.MlflowClient().list_artifacts(info.run_id, "andon")}
        assert {
            "andon/state_dict.pt",
            "andon/architecture.json",
            "andon/confusion_matrix.png",
            "andon/worst_errors.png",
            "andon/environment.json",
        } <= arts

        d1 = promote_flow(plant="plant-b", force=True, reason="first champion")
        assert alias_version(NAME, CHAMPION) == 1
        from andon.lifecycle.promotion import rollback

        with pytest.raises(RegistryError, match="no previous champion"):
            rollback(CFG, "nothing to go back to yet")
        assert d1["forced"] == bool(d1["violations"])
        v2 = train_flow(plant="plant-b", dataset_ids=[second])
        assert v2["version"] == 2
        d2 = promote_flow(plant="plant-b")
        if d2["passed"]:
            assert (alias_version(NAME, CHAMPION), alias_version(NAME, PREVIOUS)) == (2, 1)
        else:
            assert alias_version(NAME, CHAMPION) == 1
            assert version_info(NAME, 2).tags["promotion_refused.reason"]
            promote_flow(plant="plant-b", force=True, reason="test: force v2")
        assert version_info(NAME, 2).tags["promotion.by"]
        # one event path: `andon promote` runs the same flow, so its event is built the same way
        v3 = train_flow(plant="plant-b", dataset_ids=[first])
        cli = CliRunner().invoke(app, ["promote", "--plant", "plant-b", "--force", "--reason", "test: cli"])
        assert cli.exit_code == 0 and f"champion = v{v3['version']}" in cli.output, cli.output
        promoted = [e for e in _events("andon.model.promoted", since, 3) if e["resource"]["plant.id"] == "plant-b"]
        by_version = {e["payload"]["challenger"]: e for e in promoted}
        assert sorted(by_version) == [1, 2, 3] and len(promoted) == 3, promoted  # one per promotion, by any door
        flow_made, cli_made = by_version[1], by_version[3]
        assert flow_made["payload"].keys() == cli_made["payload"].keys() == set(events.PROMOTION_KEYS)
        assert flow_made["resource"] == cli_made["resource"] == events.plant_resource("plant-b")
        for e in (flow_made, cli_made):  # the one builder made both
            assert e["id"] == str(events.model_promoted("plant-b", e["payload"]).id)
        assert cli_made["payload"]["forced"] is True and cli_made["payload"]["champion"] == 2
    finally:
        training_run.train_plant = original

    runner = CliRunner()
    out = runner.invoke(app, ["rollback", NAME, "--reason", "false rejects on line-1", "--to", "1"])
    assert out.exit_code == 0, out.output
    assert (alias_version(NAME, CHAMPION), alias_version(NAME, PREVIOUS)) == (1, 3)
    assert "false rejects" in version_info(NAME, 1).tags["rollback.reason"]
    (rolled,) = _events("andon.model.rolled_back", since, 1)  # to the same server the flows report to
    assert rolled["payload"] | {"at": None} == {"from": 3, "to": 1, "reason": "false rejects on line-1", "at": None}
    diff = runner.invoke(app, ["models", "diff", NAME, "1", "2"], env={"COLUMNS": "150"})
    assert diff.exit_code == 0, diff.output
    assert "data.manifest_sha256" in diff.output and "+360 / -360 objects" in diff.output  # v1 and v2
    assert "accuracy" in diff.output and "same commit" in diff.output
    listed = runner.invoke(app, ["models", "list", NAME], env={"COLUMNS": "150"})
    assert listed.exit_code == 0 and "champion" in listed.output and "previous-champion" in listed.output
    as_json = json.loads(runner.invoke(app, ["models", "list", NAME, "--json"]).stdout)
    assert [v["version"] for v in as_json] == [1, 2, 3] and "champion" in as_json[0]["aliases"]
    shown = json.loads(runner.invoke(app, ["models", "show", NAME, "1", "--json"]).stdout)
    assert shown["tags"]["data.manifest_sha256"] == first and "test_escape_rate" in shown["metrics"]
    back = runner.invoke(app, ["rollback", NAME, "--reason", "undo", "--to", "2"])
    assert back.exit_code == 0 and alias_version(NAME, CHAMPION) == 2

    from andon.lifecycle.promotion import reproduce

    again = reproduce(lab, CFG, 1, allow_dirty=True)  # a checkout under development may be dirty
    assert again.rows and again.ok, again.rows  # seeded, deterministic CPU training: same numbers


def test_bad_input_is_a_clear_error(lab: ObjectStore, tmp_path: Path) -> None:
    from andon.lifecycle.promotion import promote, rollback
    from andon.training.run import train_plant

    with pytest.raises(UnknownPlantError):
        load_plant("plant-nowhere")
    with pytest.raises(DataError, match="no dataset"):
        train_plant(lab, CFG, ["0" * 64], recipe=SMALL)
    one_class = _dataset(lab, 3, parts=40, rate=0.0)
    with pytest.raises(DataError, match="one class only"):
        train_plant(lab, CFG, [one_class], recipe=SMALL)
    tiny = build_manifest(
        "plant-b", [{"key": f"k{i}", "sha256": "0", "label": ["ok", "defect"][i % 2]} for i in range(3)], sources=[]
    )
    save_manifest(lab, tiny)
    with pytest.raises(DataError, match="split empty"):
        train_plant(lab, CFG, [tiny.id], recipe=SMALL)
    with pytest.raises(RegistryError, match="no challenger"):
        promote(lab, CFG)
    with pytest.raises(RegistryError, match="no champion to roll back"):
        rollback(CFG, "why not")
    with pytest.raises(RegistryError, match=r"lineage tags missing: code\.commit"):
        register_version(
            NAME,
            "runs:/x/model",
            "x",
            {
                "data.manifest_sha256": "a",
                "code.dirty": "false",
                "config.sha256": "c",
                "recipe": "r",
                "plant": "plant-b",
            },
        )
    with pytest.raises(RegistryError, match="needs a --reason"):
        rollback(CFG, "  ")


def test_mlflow_unreachable_is_retried_then_clear(monkeypatch: pytest.MonkeyPatch, andon_home: Path) -> None:
    from andon.lifecycle.registry import alias_version as resolve

    monkeypatch.setenv("ANDON_MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with pytest.raises(ServiceError, match=r"did not answer \(0 retries.*andon up"):
        resolve(NAME, CHAMPION)


def test_sensor_model_on_ai4i_with_a_failure_type_held_back(lab: ObjectStore) -> None:
    """The AI4I machine-failure MLP, trained without TWF (the "new failure type" scenario),
    then with it: the retrained version has the extra head."""
    from andon.training.sensor import store_table, train_sensor

    path = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ai4i2020" / "ai4i2020.csv"
    if not path.exists():
        pytest.skip(f"{path} is not here")
    cfg = load_plant("plant-a")
    manifest_id, key = store_table(lab, cfg, path)
    assert lab.exists(key)
    without = train_sensor(lab, cfg, manifest_id, hold_out=("TWF",), epochs=15)
    assert without.version == 1 and "TWF_recall" not in without.metrics
    info = version_info("plant-a.machine-failure", 1)
    assert info.tags["held_out"] == "TWF" and info.tags["data.manifest_sha256"] == manifest_id
    full = train_sensor(lab, cfg, manifest_id, epochs=15)
    assert full.version == 2 and "TWF_recall" in full.metrics
    # heat dissipation, overstrain and power failures follow physical rules: the MLP finds them
    # (thresholds chosen for F2 on the validation split; the test split holds ~10 PWF cases)
    assert full.metrics["HDF_recall"] > 0.8 and full.metrics["OSF_recall"] > 0.8, full.metrics
    assert full.metrics["PWF_recall"] > 0.6 and full.metrics["failure_recall"] > 0.7, full.metrics
    thresholds = json.loads(Path(mlflow_artifact(full.run_id, "andon/preprocessing.json")).read_text())["thresholds"]
    assert len(thresholds) == 5 and all(0.05 <= t <= 0.95 for t in thresholds)
    with pytest.raises(DataError, match="unknown failure types"):
        train_sensor(lab, cfg, manifest_id, hold_out=("XYZ",))


def test_a_model_that_passes_every_part_never_becomes_champion(
    lab: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the real registry and gate: a network that says "ok" to every part (its weights
    cannot learn: the output ignores the input) is trained, registered and refused, whether its
    operating point is chosen on validation (a constant score rejects every part: all overkill) or
    pinned by the recipe (it passes every part: all escapes); forcing it is on the record."""
    import torch
    from torch import nn

    from andon import models
    from andon.lifecycle.promotion import promote
    from andon.training.run import train_plant

    class PassesAll(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bias = nn.Parameter(torch.tensor([8.0, -8.0]), requires_grad=False)
            self.dummy = nn.Linear(1, 1)  # something for the optimizer

        def features(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=(1, 2, 3))[:, None] * 0 + self.dummy.weight.sum() * 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bias.expand(len(x), 2) + self.dummy(self.features(x)) * 0

    real = models.build_model
    monkeypatch.setattr(
        models, "build_model", lambda name, *a, **k: PassesAll() if name == "small_cnn" else real(name, *a, **k)
    )
    data = _dataset(lab, 5, parts=300, rate=0.3)
    chosen = train_plant(lab, CFG, [data], recipe=SMALL)
    assert chosen.metrics["overkill_rate"] == 1.0 and chosen.metrics["escape_rate"] == 0.0  # rejects all
    refused = promote(lab, CFG)
    assert not refused.passed and alias_version(NAME, CHAMPION) is None
    assert any(v.startswith("overkill rate 100.0 %") for v in refused.violations), refused.violations
    pinned = SMALL.model_copy(update={"thresholds": SMALL.thresholds.model_copy(update={"defect_probability": 0.5})})
    passes = train_plant(lab, CFG, [data], recipe=pinned)
    assert passes.metrics["escape_rate"] == 1.0 and passes.metrics["overkill_rate"] == 0.0  # passes all
    again = promote(lab, CFG)
    assert not again.passed and alias_version(NAME, CHAMPION) is None
    assert any(v.startswith("escape rate 100.0 %") for v in again.violations), again.violations
    assert "escape rate 100.0 %" in version_info(NAME, passes.version or 0).tags["promotion_refused.reason"]
