"""The retrain policy step and the rendered deployments, without servers (the registry look-ups
of the policy are faked at their boundary; tests/integration/test_retrain.py runs them for real)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from andon.config import PlantConfig, list_plants, load_plant
from andon.errors import DataError
from andon.lifecycle.retraining import decide, finish_event, in_maintenance, load_state

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)  # a Thursday


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    from andon.storage import LocalObjectStore

    return LocalObjectStore(tmp_path / "objects")


@pytest.fixture
def labels(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    count = {"n": 500}
    monkeypatch.setattr("andon.lifecycle.retraining.labels_since_champion", lambda store, cfg, now: count["n"])
    return count


def _cfg(**retrain: Any) -> PlantConfig:
    cfg = load_plant("plant-a")
    spec = type(cfg.retrain).model_validate(cfg.retrain.model_dump() | retrain)  # validated, like a YAML override
    return cfg.model_copy(update={"retrain": spec})


def test_a_first_event_retrains_and_the_same_event_again_is_a_duplicate(store: Any, labels: dict[str, int]) -> None:
    cfg = _cfg(cooldown_hours=6)
    first = decide(store, cfg, "vision", "mes.sku.introduced", "ev-1", {"sku": "X"}, now=NOW)
    assert first.go and first.reasons == [] and first.summary == "retrain"
    assert load_state(store, "plant-a")["events"]["ev-1"]["status"] == "started"
    # its run failed (nothing marked it done): a retry of the same event goes on, cooldown or not
    retry = decide(store, cfg, "vision", "mes.sku.introduced", "ev-1", {"sku": "X"}, now=NOW + timedelta(hours=1))
    assert retry.go and retry.reasons == [], retry.reasons
    finish_event(store, "plant-a", "ev-1", "retrained: v2, promoted True")
    again = decide(store, cfg, "vision", "mes.sku.introduced", "ev-1", {"sku": "X"}, now=NOW + timedelta(days=3))
    assert not again.go and again.reasons[0].startswith("duplicate event ev-1: handled at 2026-11-26T13:00:00")
    state = load_state(store, "plant-a")
    assert (
        state["events"]["ev-1"]["summary"].startswith("retrained: v2") and state["events"]["ev-1"]["status"] == "done"
    )
    assert state["last_started"]["vision"] == (NOW + timedelta(hours=1)).isoformat()
    assert len(list(store.list("retraining/plant-a/decisions/"))) == 3


def test_a_skipped_event_is_handled_at_once(store: Any, labels: dict[str, int]) -> None:
    cfg = _cfg()  # a product-mix shift below the plant's threshold: a skip, and a skip is final
    skipped = decide(store, cfg, "vision", "mes.product_mix.changed", "ev-2", {"shift": 0.0}, now=NOW)
    assert not skipped.go and load_state(store, "plant-a")["events"]["ev-2"]["status"] == "done"
    again = decide(
        store, cfg, "vision", "mes.product_mix.changed", "ev-2", {"shift": 0.9}, now=NOW + timedelta(hours=1)
    )
    assert not again.go and again.reasons[0].startswith("duplicate event ev-2")


def test_cooldown_then_go(store: Any, labels: dict[str, int]) -> None:
    cfg = _cfg(cooldown_hours=6)
    assert decide(store, cfg, "vision", "mes.line.reconfigured", "a", now=NOW).go
    soon = decide(store, cfg, "vision", "mes.sku.introduced", "b", now=NOW + timedelta(hours=5))
    assert not soon.go and soon.reasons[0].startswith("cooldown: the last vision retrain started at")
    later = decide(store, cfg, "vision", "mes.sku.introduced", "c", now=NOW + timedelta(hours=7))
    assert later.go
    # a person can always retrain: manual runs skip the cooldown ("c" started a minute ago)
    assert decide(store, cfg, "vision", "manual", "d", now=NOW + timedelta(hours=7, minutes=1)).go


def test_maintenance_windows_are_in_the_plants_local_time(store: Any, labels: dict[str, int]) -> None:
    cfg = _cfg(maintenance_windows=[{"days": ["thu"], "start": "13:15", "end": "14:00"}])  # Berlin: UTC+1
    assert in_maintenance(cfg, NOW) is None  # 13:00 in Berlin
    inside = NOW + timedelta(minutes=30)  # 13:30 in Berlin
    assert in_maintenance(cfg, inside) == "thu 13:15-14:00 Europe/Berlin"
    blocked = decide(store, cfg, "vision", "mes.sku.introduced", "m1", now=inside)
    assert not blocked.go and blocked.reasons == ["maintenance window (thu 13:15-14:00 Europe/Berlin)"]
    assert decide(store, cfg, "vision", "mes.sku.introduced", "m2", now=NOW + timedelta(hours=2)).go


@pytest.mark.parametrize(
    ("trigger", "details", "reason"),
    [
        ("mes.product_mix.changed", {"shift": 0.1}, "product-mix shift 0.100 is below the plant's threshold 0.2"),
        ("andon.performance.degraded", {"accuracy_drop_pct": 6.0}, "accuracy drop 6.0 points is below the plant's 15"),
        ("andon.performance.degraded", {}, "accuracy drop None points"),
        ("andon.drift.detected", {"severity": "medium"}, "drift severity medium is below the plant's high"),
    ],
)
def test_events_under_the_plants_thresholds_do_not_retrain(
    store: Any, labels: dict[str, int], trigger: str, details: dict[str, Any], reason: str
) -> None:
    d = decide(store, _cfg(), "vision", trigger, "t", details, now=NOW)
    assert not d.go and any(r.startswith(reason) for r in d.reasons), d.reasons


def test_drift_and_degradation_wait_for_new_labels_but_mes_events_do_not(store: Any, labels: dict[str, int]) -> None:
    cfg = _cfg(min_new_labels=200)
    labels["n"] = 50
    drift = decide(store, cfg, "vision", "andon.drift.detected", "d1", {"severity": "high"}, now=NOW)
    assert not drift.go and drift.new_labels == 50
    assert drift.reasons == ["too few new labels: 50 since the champion, need 200"]
    assert decide(store, cfg, "vision", "mes.sku.introduced", "s1", now=NOW).go
    labels["n"] = 250
    perf = decide(
        store,
        cfg,
        "vision",
        "andon.performance.degraded",
        "p1",
        {"accuracy_drop_pct": 16},
        now=NOW + timedelta(hours=7),
    )
    assert perf.go and perf.new_labels == 250


def test_wrong_task_and_unknown_failure_type(store: Any) -> None:
    with pytest.raises(DataError, match="task 'welding'"):
        decide(store, _cfg(), "welding", "manual")
    d = decide(store, _cfg(), "machine-failure", "mes.failure_type.logged", "f", {"failure_type": "ZAP"}, now=NOW)
    assert not d.go and "'ZAP' is not in the sensor table (TWF, HDF, PWF, OSF, RNF)" in d.reasons[0]


def test_maintenance_window_config_is_checked() -> None:
    from pydantic import ValidationError

    from andon.config import MaintenanceWindow

    with pytest.raises(ValidationError, match="after start"):
        MaintenanceWindow(start="06:00", end="02:00")
    with pytest.raises(ValidationError):
        MaintenanceWindow(start="25:00", end="26:00")


# ---------------------------------------------------------------------------- deployments


def test_every_plant_gets_its_six_deployments_and_scoped_triggers() -> None:
    from andon.deployments import RETRAIN_CAUSES, render

    plants = [load_plant(p) for p in list_plants()]
    doc = render(plants)
    names = {d["name"] for d in doc["deployments"]}
    for cfg in plants:
        kinds = ("score", "validate", "monitor", "monitor-hourly", "drift-nightly", "retrain")
        assert {f"{k}-{cfg.id}" for k in kinds} <= names
        deps = {d["name"]: d for d in doc["deployments"] if d["name"].endswith(cfg.id)}
        assert all(d["work_pool"]["name"] == f"andon-{cfg.id}" for d in deps.values())
        (every,) = deps[f"monitor-{cfg.id}"]["schedules"]
        assert every["interval"] == cfg.monitoring.window_minutes * 60 and every["timezone"] == cfg.timezone
        assert deps[f"drift-nightly-{cfg.id}"]["schedules"][0]["cron"] == cfg.schedules.drift_nightly
        retrain = deps[f"retrain-{cfg.id}"]
        assert retrain["concurrency_limit"] == {"limit": 1, "collision_strategy": "ENQUEUE"}
        triggers = retrain["triggers"]
        assert sorted(t["expect"][0] for t in triggers) == sorted(RETRAIN_CAUSES)
        for t in triggers:  # never unscoped: an event of another plant must not match
            assert t["match"] == {"prefect.resource.id": f"andon.plant.{cfg.id}", "andon.significant": "true"}
            assert t["parameters"]["plant"] == cfg.id
            assert t["parameters"]["task"] == ("machine-failure" if "failure_type" in t["expect"][0] else "vision")


def test_triggers_and_schedules_are_valid_prefect_objects() -> None:
    from prefect.events import DeploymentEventTrigger

    from andon.deployments import render

    doc = render([load_plant("plant-b")])
    for dep in doc["deployments"]:
        for trig in dep.get("triggers", []):
            parsed = DeploymentEventTrigger(**{k: v for k, v in trig.items() if k != "type"})
            assert parsed.expect == set(trig["expect"])


def test_the_committed_prefect_yaml_is_rendered_from_the_configs() -> None:
    from andon.deployments import render_yaml
    from andon.settings import REPO_ROOT

    rendered = render_yaml([load_plant(p) for p in list_plants()])
    assert (REPO_ROOT / "deployments" / "prefect.yaml").read_text() == rendered, "run `andon deployments render`"


def test_deploy_changes_are_listed() -> None:
    from andon.deployments import changes, render

    a = render([load_plant("plant-a"), load_plant("plant-b")])
    cfg = load_plant("plant-a")
    moved = cfg.model_copy(update={"schedules": cfg.schedules.model_copy(update={"drift_nightly": "0 4 * * *"})})
    b = render([moved, load_plant("plant-c")])
    diff = changes(a, b)
    assert "monitor-plant-c" in diff["added"] and "retrain-plant-b" in diff["removed"]
    assert diff["changed"] == ["drift-nightly-plant-a: schedules"]
    assert changes(None, a)["added"] == sorted(d["name"] for d in a["deployments"])


def test_recipe_overrides_outside_the_centers_ranges() -> None:
    from andon.governance.policy import Policy, check_recipe, load_policy

    assert check_recipe(load_plant("plant-b"), load_policy()) == []  # the shipped plants comply
    cfg = load_plant("plant-b")
    recipe = cfg.recipe.model_copy(
        update={"model": cfg.recipe.model.model_copy(update={"name": "resnet18"}),
                "image": cfg.recipe.image.model_copy(update={"size": 32})}
    )  # fmt: skip
    policy = Policy({"model.name": ["small_cnn"], "image.size": [64, 512]}, 24, ())
    found = [f.message for f in check_recipe(cfg.model_copy(update={"recipe": recipe}), policy)]
    assert found == [
        "recipe.model.name = 'resnet18': the center allows ['small_cnn']",
        "recipe.image.size = 32: outside the center's range [64, 512]",
    ]


def test_generated_fleet_is_valid_varied_and_within_policy(tmp_path: Path) -> None:
    from andon.config import load_all_plants
    from andon.governance.fleet import generate_plants
    from andon.governance.policy import check_recipe, load_policy

    ids = generate_plants(12, tmp_path / "fleet")
    plants = load_all_plants(tmp_path / "fleet")
    assert sorted(plants) == ids == [f"plant-{i:03d}" for i in range(1, 13)]
    assert len({p.timezone for p in plants.values()}) >= 5 and len({p.camera.model for p in plants.values()}) == 4
    assert len({p.lighting.brightness for p in plants.values()}) > 6
    assert plants["plant-005"].recipe.training.epochs == 10  # a local override ...
    policy = load_policy(tmp_path / "fleet")
    assert all(check_recipe(p, policy) == [] for p in plants.values())  # ... inside the center's ranges


def test_central_config_is_the_standard_recipe() -> None:
    from andon.config import configs_dir, read_yaml
    from andon.governance.central import central_config

    cfg = central_config()
    base = read_yaml(configs_dir() / "base.yaml")
    assert cfg.id == "central" and cfg.recipe.model_dump(mode="json")["training"] == base["recipe"]["training"]
    assert {s.code for s in cfg.skus} >= {"IMP-300", "DSC-100", "PLT-200"}  # every plant's products


def test_a_promotion_event_is_the_decisions_a_re_promotion_is_another() -> None:
    from andon.events import model_promoted

    first = {"challenger": 3, "champion": 2, "violations": [], "forced": False, "evaluated_on": "golden"}
    once = model_promoted("plant-a", first | {"decided_at": "2026-11-26T08:00:00+00:00"})
    assert once.id == model_promoted("plant-a", first | {"decided_at": "2026-11-26T08:00:00+00:00"}).id  # a retry
    again = model_promoted("plant-a", first | {"decided_at": "2026-11-27T08:00:00+00:00"})  # after a rollback
    assert again.id != once.id and again.payload["challenger"] == once.payload["challenger"]
