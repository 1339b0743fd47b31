"""A registered version's files swapped in the artifact store are refused at every load.

Issue 16 point 5: a version's ``andon/state_dict.pt`` was replaced through MLflow's REST API and
nothing checked the weights at load. Here a tiny model is trained through the real MLflow SQLite
store, the artifact file is overwritten on disk (what the REST upload did), and every loading path
(``load_version``, ``load_run``, ``load_state_dict`` for fine-tunes, the scoring cache and the online
service) refuses it with an :class:`IntegrityError` naming both digests.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from andon.config import load_plant
from andon.data.batches import parquet_to_frame
from andon.data.datasets import build_manifest, save_manifest
from andon.errors import IntegrityError
from andon.storage import ObjectStore, open_store
from andon.synth.plant import synthesize_plant

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CFG = load_plant("plant-b")
NAME = "plant-b.surface-defects"
TINY = CFG.recipe.model_copy(
    update={
        "image": CFG.recipe.image.model_copy(update={"size": 32}),
        "training": CFG.recipe.training.model_copy(update={"epochs": 1, "batch_size": 32}),
        "augmentations": CFG.recipe.augmentations[:1],
    }
)


def _dataset(store: ObjectStore) -> str:
    batches = synthesize_plant(
        CFG,
        store,
        160,
        seed=3,
        defect_rate=0.35,
        start=datetime(2026, 11, 10, 3, tzinfo=UTC),
        lines=[CFG.line_ids[0]],
        batch_size=10_000,
        workers=1,
    )
    objects = []
    for b in batches:
        meta = parquet_to_frame(store.get(b.metadata_key))
        objects += [{"key": r.image_key, "sha256": r.sha256, "label": r.label} for r in meta.itertuples()]
    manifest = build_manifest(CFG.id, objects, sources=[b.prefix for b in batches])
    save_manifest(store, manifest)
    return manifest.id


def _artifact_file(run_id: str, name: str) -> Path:
    import mlflow

    uri = mlflow.get_run(run_id).info.artifact_uri
    root = Path(unquote(urlparse(uri).path)) if uri.startswith("file:") else Path(uri)
    return root / "andon" / name


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def trained(andon_home: Path, mlflow_tracking_uri: str) -> tuple[ObjectStore, int, str]:
    from andon.training.run import train_plant

    store = open_store()
    out = train_plant(store, CFG, [_dataset(store)], recipe=TINY)
    assert out.version is not None
    return store, out.version, out.run_id


def test_a_swapped_weights_file_is_refused_at_every_load(trained: tuple[ObjectStore, int, str]) -> None:
    import torch

    from andon.lifecycle.registry import CHAMPION, client, set_alias, version_info
    from andon.models import build_from_arch
    from andon.scoring import batch as scoring
    from andon.scoring.online import ScoringService
    from andon.training.run import SPECS_TAG, WEIGHTS_TAG, load_run, load_state_dict, load_version

    store, version, run_id = trained
    weights = _artifact_file(run_id, "state_dict.pt")
    genuine = _sha(weights)
    # the lineage records the digest, on the run and on the registered version
    assert version_info(NAME, version).tags[WEIGHTS_TAG] == genuine
    assert client().get_run(run_id).data.tags[WEIGHTS_TAG] == genuine
    assert version_info(NAME, version).tags[SPECS_TAG]
    assert load_version(NAME, version).model is not None  # the genuine file loads

    # the attacker's file: the same architecture with other weights (it would load without a check)
    arch = json.loads(_artifact_file(run_id, "architecture.json").read_text())
    torch.manual_seed(99)
    torch.save(build_from_arch(arch).state_dict(), weights)
    swapped = _sha(weights)
    assert swapped != genuine

    for load in (
        lambda: load_version(NAME, version),
        lambda: load_run(run_id),
        lambda: load_state_dict(NAME, version),
    ):
        with pytest.raises(IntegrityError) as refused:
            load()
        assert genuine in str(refused.value) and swapped in str(refused.value)

    # the scoring path (batch scoring and the online service) refuses too
    set_alias(NAME, CHAMPION, version)
    scoring._load_cached.cache_clear()
    with pytest.raises(IntegrityError, match="does not match its lineage"):
        scoring.load_cached(NAME, version)
    service = ScoringService(store, CFG)
    service.refresh_champion()
    assert service.champion is None
    assert service.health()["status"] != "ok"
    assert "does not match its lineage" in service.health()["champion_error"]


def test_swapped_specs_and_altered_lineage_are_refused(trained: tuple[ObjectStore, int, str]) -> None:
    from andon.lifecycle.registry import client
    from andon.training.run import WEIGHTS_TAG, load_version

    _store, version, run_id = trained
    op_file = _artifact_file(run_id, "operating_point.json")
    original = op_file.read_text()
    op = json.loads(original)
    op["threshold"] = 1.0  # pass every part: as dangerous as swapped weights
    op_file.write_text(json.dumps(op))
    with pytest.raises(IntegrityError, match="does not match its lineage"):
        load_version(NAME, version)
    op_file.write_text(original)
    load_version(NAME, version)  # restored: it loads again

    # a version tag rewritten to match a swapped file no longer agrees with the run's lineage
    client().set_model_version_tag(NAME, str(version), WEIGHTS_TAG, "0" * 64)
    with pytest.raises(IntegrityError, match="lineage was altered"):
        load_version(NAME, version)
    # a run whose digest tag was deleted cannot be verified: refused as well
    client().set_model_version_tag(NAME, str(version), WEIGHTS_TAG, "")
    client().delete_tag(run_id, WEIGHTS_TAG)
    with pytest.raises(IntegrityError, match="cannot be verified"):
        load_version(NAME, version)
