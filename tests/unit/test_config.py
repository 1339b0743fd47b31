"""The real configs, loaded and checked; the error format on broken copies of them."""

import shutil
from pathlib import Path

import pytest
import yaml

from andon.config import deep_merge, list_plants, load_all_plants, load_plant
from andon.errors import ConfigError, UnknownPlantError

REPO = Path(__file__).resolve().parents[2]


def test_three_demo_plants_load_and_differ() -> None:
    plants = load_all_plants()
    assert set(plants) >= {"plant-a", "plant-b", "plant-c"}
    a, b, c = plants["plant-a"], plants["plant-b"], plants["plant-c"]
    # they differ in camera, lighting and SKUs, as the issue asks
    assert len({a.camera.model, b.camera.model, c.camera.model}) == 3
    assert len({(p.lighting.brightness, p.lighting.gamma) for p in (a, b, c)}) == 3
    assert not set(a.sku_codes) & set(b.sku_codes) and not set(b.sku_codes) & set(c.sku_codes)
    # ...and share the standard recipe where they do not override it
    assert b.recipe == c.recipe
    # plant-a: only its epochs, its input size and its photometric augmentations (its ring light drifts)
    same = {"training": b.recipe.training, "augmentations": b.recipe.augmentations, "image": b.recipe.image}
    assert a.recipe.model_copy(update=same) == b.recipe
    assert a.recipe.training.epochs == 6 and len(a.recipe.augmentations) > len(b.recipe.augmentations)
    assert a.quality.max_escape_rate < b.quality.max_escape_rate  # castings go into pumps
    assert b.registered_model_name == "plant-b.surface-defects"


def test_override_merges_key_by_key() -> None:
    b = load_plant("plant-b")
    # plant-b overrides only temperature_c; the other sensors come from base.yaml
    assert b.sensors["temperature_c"].nominal == 42.0
    assert b.sensors["pressure_bar"].nominal == 6.0
    # a per-line camera override replaces the plant camera for that line only
    assert b.camera_for("line-3").rotation_deg == 4.0
    assert b.camera_for("line-1").focus_blur_sigma == 0.6
    # ...merged: what line-3 does not set comes from the plant camera
    assert b.camera_for("line-3").focus_blur_sigma == 0.6
    assert b.camera_signature("line-1") == b.camera_signature("line-2") != b.camera_signature("line-3")


def test_deep_merge_lists_replace() -> None:
    assert deep_merge({"a": {"x": 1, "y": [1, 2]}}, {"a": {"y": [3]}}) == {"a": {"x": 1, "y": [3]}}


def test_config_sha256_is_stable_and_sensitive(tmp_path: Path) -> None:
    root = _copy_configs(tmp_path)
    before = load_plant("plant-c", root).sha256()
    assert before == load_plant("plant-c", root).sha256()
    _edit(root / "plants" / "plant-c.yaml", lambda d: d["lighting"].update(brightness=1.3))
    assert load_plant("plant-c", root).sha256() != before


def test_unknown_plant_lists_known_ones() -> None:
    with pytest.raises(UnknownPlantError, match=r"unknown plant 'plant-z'.*plant-a, plant-b, plant-c"):
        load_plant("plant-z")
    with pytest.raises(UnknownPlantError, match="invalid plant id"):
        load_plant("../etc/passwd")


def _copy_configs(tmp_path: Path) -> Path:
    root = tmp_path / "configs"
    shutil.copytree(REPO / "configs", root)
    return root


def _edit(path: Path, change) -> None:  # type: ignore[no-untyped-def]
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data))


@pytest.mark.parametrize(
    ("file", "change", "expected"),
    [
        (
            "plants/plant-b.yaml",
            lambda d: d["camera"].update(gama=1.2),
            "plants/plant-b.yaml: camera.gama: unknown field",
        ),
        (
            "plants/plant-b.yaml",
            lambda d: d["lighting"].update(brightness=-1),
            "plants/plant-b.yaml: lighting.brightness: Input should be greater than 0",
        ),
        (
            "plants/plant-b.yaml",
            lambda d: d.update(timezone="Mars/Olympus"),
            "plants/plant-b.yaml: timezone:",
        ),
        (
            "plants/plant-b.yaml",
            lambda d: d.update(lines=[]),
            "plants/plant-b.yaml: lines: Tuple should have at least 1",
        ),
        (
            "plants/plant-b.yaml",
            lambda d: d["skus"].append(dict(d["skus"][0])),
            "plants/plant-b.yaml: skus: Value error, duplicate ids: ['DSC-100']",
        ),
        (
            "base.yaml",
            lambda d: d["recipe"]["training"].update(epochs=0),
            "base.yaml: recipe.training.epochs:",
        ),
        (
            "base.yaml",
            lambda d: d["recipe"].update(classes=["ok", "ok"]),
            "base.yaml: recipe.classes: Value error",
        ),
    ],
)
def test_invalid_config_names_file_field_and_problem(tmp_path: Path, file: str, change, expected: str) -> None:  # type: ignore[no-untyped-def]
    root = _copy_configs(tmp_path)
    _edit(root / file, change)
    with pytest.raises(ConfigError) as info:
        load_plant("plant-b", root)
    assert expected in str(info.value)


def test_broken_yaml_and_wrong_id(tmp_path: Path) -> None:
    root = _copy_configs(tmp_path)
    (root / "plants" / "plant-c.yaml").write_text("lines: [\n")
    with pytest.raises(ConfigError, match=r"plant-c\.yaml: invalid YAML"):
        load_plant("plant-c", root)
    _edit(root / "plants" / "plant-a.yaml", lambda d: d.update(id="plant-x"))
    with pytest.raises(ConfigError, match="id: must match the file name"):
        load_plant("plant-a", root)
    # load_all collects every problem before raising
    with pytest.raises(ConfigError) as info:
        load_all_plants(root)
    assert "plant-c.yaml" in str(info.value) and "plant-a.yaml" in str(info.value)
    assert list_plants(root) == ["plant-a", "plant-b", "plant-c"]
    with pytest.raises(ConfigError, match="no plants/ folder"):
        list_plants(tmp_path / "nowhere")


def test_augmentations_of_the_recipe_build_with_albumentations_strict() -> None:
    """The recipe's transforms exist in albumentations 2.x with these argument names."""
    import albumentations as A
    import numpy as np

    recipe = load_plant("plant-a").recipe
    transforms = [getattr(A, a.name)(p=a.p, **a.params, strict=True) for a in recipe.augmentations]
    out = A.Compose(transforms, strict=True)(image=np.full((128, 128, 1), 120, np.uint8))["image"]
    assert out.shape == (128, 128, 1)
