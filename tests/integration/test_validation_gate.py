"""The gate end to end on synthetic plant data: accept into a dataset version, quarantine a bad
batch (raw never touched), learned bounds, dataset combine / diff, the CLI's exit codes, and
the validate-batch flow under the Prefect harness (artifacts and events)."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from andon.cli.main import app
from andon.config import load_plant
from andon.data.batches import parquet_to_frame
from andon.data.datasets import combine, diff, load_manifest
from andon.errors import DataError
from andon.storage import LocalObjectStore, ObjectStore, S3ObjectStore, open_store
from andon.synth.images import Drift
from andon.synth.plant import synthesize_plant
from andon.validation.gate import batch_status, run_gate
from andon.validation.learn import learn_from_batches

CFG = load_plant("plant-b")
START = datetime(2026, 11, 9, 6, tzinfo=UTC)


def _snapshot(store: ObjectStore, prefix: str) -> dict[str, bytes]:
    return {o.key: store.get(o.key) for o in store.list(prefix)}


def _batches(store: ObjectStore, n: int = 120, **kw):  # type: ignore[no-untyped-def]
    return synthesize_plant(CFG, store, n, start=START, lines=["line-1"], workers=1, **kw)


def test_accept_over_s3_gives_a_stable_dataset_version(s3_store: S3ObjectStore) -> None:
    (batch,) = _batches(s3_store, seed=1)
    result = run_gate(s3_store, CFG, batch.prefix)
    assert result.accepted, result.failed()
    manifest = load_manifest(s3_store, "plant-b", result.manifest_id or "")
    meta = parquet_to_frame(s3_store.get(batch.metadata_key))
    assert sorted(o["key"] for o in manifest.objects) == sorted(meta.image_key)
    assert manifest.counts() == meta.label.value_counts().sort_index().to_dict()
    assert s3_store.exists(f"datasets/plant-b/{manifest.id}.json")
    again = run_gate(s3_store, CFG, s3_store.uri(batch.prefix).replace(f"s3://{s3_store.bucket}", s3_store.url))
    assert again.manifest_id == result.manifest_id, "re-running gives the same dataset id"
    status = batch_status(s3_store, CFG, batch.line, batch.batch_id)
    assert status and status["verdict"] == "accepted" and status["manifest_id"] == manifest.id
    assert b"ACCEPTED" in s3_store.get(result.report_key or "")


def test_a_bad_batch_is_quarantined_and_raw_is_untouched(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    (batch,) = _batches(store, seed=2)
    images = [o.key for o in store.list(f"{batch.prefix}/images/")]
    store.put(images[0], store.get(images[0])[:200])  # a truncated file, as a flaky upload leaves it
    store.put(f"{batch.prefix}/images/stray.png", b"text, not a PNG")
    store.put(f"{batch.prefix}/images/again.png", store.get(images[1]))  # the same part, twice
    raw_before = _snapshot(store, f"{batch.prefix}/")

    result = run_gate(store, CFG, batch.prefix)
    assert result.verdict == "quarantined" and result.manifest_id is None
    failed = {r.rule for _, r in result.failed()}
    assert {
        "image: decodes",
        "image: has a metadata row",
        "image: sha256 matches its metadata row",
        "image: no duplicate content (sha256)",
    } <= failed
    assert _snapshot(store, f"{batch.prefix}/") == raw_before, "raw data is never modified"
    q = result.quarantine_prefix or ""
    assert q == f"plant-b/line-1/quarantine/{batch.batch_id}"
    copied = _snapshot(store, f"{q}/")
    for key, data in raw_before.items():
        assert copied[q + key[len(batch.prefix) :]] == data, "the quarantine holds the whole batch"
    saved = json.loads(store.get(f"{q}/result.json"))
    assert saved["verdict"] == "quarantined" and "images: image: decodes" in saved["failed_rules"]
    html = store.get(f"{q}/report.html").decode()
    assert "QUARANTINED" in html and "image: decodes" in html and "stray.png" in html and "data:image/png" in html
    assert not list(store.list("datasets/")), "nothing bad reaches a dataset"


def test_planted_faults_each_fail_their_rule(tmp_path: Path) -> None:
    from andon.synth.faults import plant_faults

    store = LocalObjectStore(tmp_path / "objects")
    (batch,) = _batches(store, n=40, seed=12)
    faulty = plant_faults(store, batch.prefix)
    result = run_gate(store, CFG, faulty.prefix)
    failed = {f"{t}: {r.rule}" for t, r in result.failed()}
    assert {
        "images: image: decodes",
        "metadata: sku: in {DSC-100, DSC-120, RNG-080}",
        "images: metadata row: has its image",
        "metadata: timestamp: never goes backwards per line",
        "images: image: has a metadata row",
    } <= failed, failed
    assert run_gate(store, CFG, batch.prefix).accepted, "the source batch is untouched and still good"


def test_empty_batch_is_quarantined(tmp_path: Path) -> None:
    from andon.data.batches import BatchInfo, frame_to_parquet, write_batch_tables

    store = LocalObjectStore(tmp_path / "objects")
    (batch,) = _batches(store, n=10, seed=13)
    meta = parquet_to_frame(store.get(batch.metadata_key)).iloc[:0]
    prefix = batch.prefix.replace("-s13", "-empty")
    empty = BatchInfo("plant-b", "line-1", batch.date, prefix.rsplit("/", 1)[1], prefix, 0, 0, "synthetic", {})
    write_batch_tables(store, empty, meta)
    assert frame_to_parquet(meta)
    result = run_gate(store, CFG, prefix)
    failed = {r.rule for _, r in result.failed()}
    assert result.verdict == "quarantined"
    assert {"table: at least one row", "images: at least one"} <= failed


def test_learned_profile_quarantines_a_lighting_shift(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    (reference,) = _batches(store, n=200, seed=3)
    profile, path = learn_from_batches(store, CFG, [reference.prefix], min_batch_rows=100, root=tmp_path / "profiles")
    assert profile.version == 1 and "temperature_c" in profile.tables["sensors"].columns
    assert learn_from_batches(store, CFG, [reference.prefix], root=tmp_path / "profiles")[0].version == 2
    assert "learned by `andon validate learn`" in path.read_text()

    normal = synthesize_plant(CFG, store, 100, seed=4, start=START.replace(hour=9), lines=["line-1"], workers=1)[0]
    assert run_gate(store, CFG, normal.prefix, profile).accepted
    dark = synthesize_plant(
        CFG, store, 100, seed=5, start=START.replace(hour=10), lines=["line-1"], workers=1, drift=Drift(brightness=0.6)
    )[0]
    failed = {r.rule.split(" within")[0] for _, r in run_gate(store, CFG, dark.prefix, profile).failed()}
    assert "batch: mean brightness" in failed


def test_a_dataset_of_a_batch_quarantined_later_is_unusable(tmp_path: Path) -> None:
    from andon.data.datasets import revoked_sources
    from andon.validation.profile import ValidationProfile

    store = LocalObjectStore(tmp_path / "objects")
    (batch,) = _batches(store, n=40, seed=16)
    first = run_gate(store, CFG, batch.prefix)
    assert first.accepted
    learned, _ = learn_from_batches(store, CFG, [batch.prefix], root=tmp_path / "profiles")
    # a stricter profile arrives (bounds that this batch no longer meets) and the batch is re-validated
    cam = CFG.camera_signature("line-1")
    strict = learned.images[cam].model_copy(
        update={"brightness": learned.images[cam].brightness.model_copy(update={"mean_low": 250.0, "mean_high": 255.0})}
    )
    profile = ValidationProfile(**{**learned.model_dump(), "images": {cam: strict.model_dump()}})
    assert run_gate(store, CFG, batch.prefix, profile).verdict == "quarantined"
    manifest = load_manifest(store, "plant-b", first.manifest_id or "")
    assert revoked_sources(store, manifest) == [batch.prefix]
    with pytest.raises(DataError, match="quarantined since it was made"):
        combine(store, "plant-b", [manifest.id])


def test_datasets_combine_and_diff(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    first = run_gate(store, CFG, _batches(store, n=60, seed=6)[0].prefix)
    b2 = synthesize_plant(CFG, store, 60, seed=7, start=START.replace(hour=8), lines=["line-1"], workers=1)[0]
    second = run_gate(store, CFG, b2.prefix)
    ids = [first.manifest_id or "", second.manifest_id or ""]
    combined = combine(store, "plant-b", ids)
    assert len(combined.objects) == 120 and combined.parents == sorted(ids)
    assert combine(store, "plant-b", ids[::-1]).id == combined.id, "order does not change the version"
    d = diff(load_manifest(store, "plant-b", ids[0]), combined)
    assert len(d.added) == 60 and not d.removed and not d.relabelled
    with pytest.raises(DataError, match="no dataset"):
        load_manifest(store, "plant-b", "f" * 64)


def test_could_not_run_is_an_error_not_a_quarantine(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    (batch,) = _batches(store, n=20, seed=8)
    with pytest.raises(DataError, match="no batch at"):
        run_gate(store, CFG, "plant-b/line-1/raw/2026-11-09/nothing-here")
    with pytest.raises(DataError, match="not under plant plant-c"):
        run_gate(store, load_plant("plant-c"), batch.prefix)
    store.put("plant-b/line-1/raw/2026-11-09/half/images/a.png", b"x")
    with pytest.raises(DataError, match="incomplete"):
        run_gate(store, CFG, "plant-b/line-1/raw/2026-11-09/half")
    with pytest.raises(DataError, match="not inside the object store"):
        run_gate(store, CFG, "s3://elsewhere/plant-b/line-1/raw/x")
    with pytest.raises(DataError, match=f"not a raw batch.*batches below it: {batch.prefix}"):
        run_gate(store, CFG, batch.prefix.rsplit("/", 1)[0])  # the date folder
    from andon.synth.faults import plant_faults

    faulty = plant_faults(store, batch.prefix, faults=("unknown-sku",))
    quarantine = run_gate(store, CFG, faulty.prefix).quarantine_prefix or ""
    with pytest.raises(DataError, match="not a raw batch"):
        run_gate(store, CFG, quarantine)


def test_cli_exit_codes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANDON_HOME", str(tmp_path))
    store = open_store()
    (good,) = _batches(store, n=40, seed=9)
    runner = CliRunner()
    ok = runner.invoke(app, ["validate", "--plant", "plant-b", good.prefix])
    assert ok.exit_code == 0 and "ACCEPTED" in ok.output, ok.output
    meta = parquet_to_frame(store.get(good.metadata_key))
    bad_prefix = good.prefix.replace("-s9", "-bad")
    for o in store.list(good.prefix + "/"):
        store.put(bad_prefix + o.key[len(good.prefix) :], store.get(o.key))
    meta["sku"] = "UNKNOWN-SKU"
    meta["image_key"] = meta.image_key.str.replace("-s9", "-bad")
    from andon.data.batches import frame_to_parquet

    store.put(f"{bad_prefix}/metadata.parquet", frame_to_parquet(meta))
    info = json.loads(store.get(f"{bad_prefix}/batch.json"))
    store.put(
        f"{bad_prefix}/batch.json",
        json.dumps({**info, "prefix": bad_prefix, "batch_id": info["batch_id"].replace("-s9", "-bad")}).encode(),
    )
    quarantined = runner.invoke(app, ["validate", "--plant", "plant-b", bad_prefix])
    assert quarantined.exit_code == 1 and "QUARANTINED" in quarantined.output
    assert "sku: in" in quarantined.output
    missing = runner.invoke(app, ["validate", "--plant", "plant-b", "plant-b/line-1/raw/nope"])
    assert missing.exit_code == 2
    listed = runner.invoke(app, ["datasets", "list", "--plant", "plant-b"])
    assert listed.exit_code == 0 and "ok:" in listed.output


def test_cli_learn_and_datasets_diff(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    configs = tmp_path / "configs"
    shutil.copytree(Path(__file__).resolve().parents[2] / "configs", configs)
    monkeypatch.setenv("ANDON_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ANDON_CONFIGS_DIR", str(configs))
    store = open_store()
    (one,) = _batches(store, n=60, seed=14)
    two = synthesize_plant(CFG, store, 60, seed=15, start=START.replace(hour=11), lines=["line-1"], workers=1)[0]
    runner = CliRunner()
    learned = runner.invoke(app, ["validate", "learn", "--plant", "plant-b", "--reference", one.prefix])
    assert learned.exit_code == 0, learned.output
    assert "profile v1" in learned.output and (configs / "validation" / "plant-b.yaml").exists()
    ids = []
    for b in (one, two):
        out = runner.invoke(app, ["validate", "--plant", "plant-b", "--json", b.prefix])
        assert out.exit_code == 0, out.output
        ids.append(json.loads(out.stdout)["manifest_id"])
    diffed = runner.invoke(app, ["datasets", "diff", "--plant", "plant-b", ids[0][:10], ids[1][:10]])
    assert diffed.exit_code == 0 and "added 60, removed 60" in diffed.output, diffed.output
    combined = runner.invoke(app, ["datasets", "combine", "--plant", "plant-b", ids[0][:8], ids[1][:8]])
    assert combined.exit_code == 0 and "120 objects" in " ".join(combined.output.split())
    table = runner.invoke(app, ["validate", "table", "ai4i2020", str(tmp_path / "missing.csv")])
    assert table.exit_code == 2


async def _events(name: str) -> list[dict]:  # type: ignore[type-arg]
    import httpx
    from prefect.settings import PREFECT_API_URL

    async with httpx.AsyncClient(base_url=PREFECT_API_URL.value()) as client:
        resp = await client.post("/events/filter", json={"filter": {"event": {"name": [name]}}, "limit": 50})
        resp.raise_for_status()
        return list(resp.json()["events"])


def test_validate_flow_publishes_artifacts_and_events(prefect_harness: None, andon_home: Path) -> None:
    from andon.flows.validate import validate_batch_flow

    store = open_store()
    (batch,) = _batches(store, n=40, seed=10)
    result = validate_batch_flow(plant="plant-b", batch=batch.prefix)
    assert result["verdict"] == "accepted"
    deadline = time.monotonic() + 20
    events: list[dict] = []  # type: ignore[type-arg]
    while time.monotonic() < deadline and not events:
        events = asyncio.run(_events("andon.batch.validated"))
        time.sleep(0.5)
    assert events, "andon.batch.validated reached the Prefect server"
    ev = events[0]
    assert ev["resource"]["prefect.resource.id"] == "andon.plant.plant-b"
    assert ev["resource"]["line.id"] == "line-1" and ev["payload"]["manifest_id"] == result["manifest_id"]
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async def artifacts() -> dict[str, object]:
        async with get_client() as client:
            keys = ["plant-b-validation", "plant-b-validation-report"]
            found = await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)))
            return {a.key: a for a in found}

    found = asyncio.run(artifacts())
    assert "ACCEPTED" in str(found["plant-b-validation"].data)  # type: ignore[attr-defined]
    # the report's link opens in a browser: through `andon ui`, behind its login and plant scope
    from andon.settings import get_settings

    link = f"({get_settings().ui_url}/p/plant-b/object/reports/plant-b/validation/"
    assert link in str(found["plant-b-validation-report"].data)  # type: ignore[attr-defined]
