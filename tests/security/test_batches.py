"""Crafted batch files and write-once raw data (issue 16, points 9, 11 and 12).

A ``batch.json`` is input: a line or batch id that would steer a key elsewhere is quarantined with
the reason recorded (the gate never crashes, never writes outside the batch's own folder); a batch
id another batch already holds never replaces that batch's verdict; ingest refuses files whose
key-safe names collide; batch ids are content-addressed and raw data is write-once; ``andon score``
refuses a batch the gate did not accept; a label import with a bad date or deep JSON is a clear
error, never a traceback."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from andon.cli.main import app
from andon.config import load_plant
from andon.data.batches import BatchInfo, read_batch_info
from andon.data.ingest import ingest_folder
from andon.errors import DataError
from andon.storage import LocalObjectStore, ObjectStore, open_store
from andon.synth.plant import synthesize_plant
from andon.validation.gate import run_gate, verdict_of

pytestmark = pytest.mark.integration
CFG = load_plant("plant-b")
START = datetime(2026, 11, 9, 6, tzinfo=UTC)


def _batch(store: ObjectStore, seed: int = 1, n: int = 40) -> BatchInfo:
    (batch,) = synthesize_plant(CFG, store, n, seed=seed, start=START, lines=["line-1"], workers=1)
    return batch


def _snapshot(store: ObjectStore, prefix: str = "") -> dict[str, bytes]:
    return {o.key: store.get(o.key) for o in store.list(prefix)}


def _rewrite_batch_json(store: ObjectStore, where: str, **changes: object) -> None:
    raw = json.loads(store.get(f"{where}/batch.json"))
    store.put(f"{where}/batch.json", json.dumps({**raw, **changes}).encode())


def _copy_batch(store: ObjectStore, src: str, dst: str) -> None:
    for o in store.list(f"{src}/"):
        store.copy(o.key, dst + o.key[len(src) :])


# ---------------------------------------------------------------- crafted batch.json


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("line", "../../plant-a/line-1", "batch.json: line is its folder's"),
        ("batch_id", "../../../plant-a/line-1/raw/2026-11-09/x", "batch.json: batch_id is its folder's"),
        ("prefix", "plant-a/line-1/raw/2026-11-09/x", "batch.json: prefix is its folder's"),
        ("plant", "plant-a", "batch.json: plant is its folder's"),
        ("parts", "many", "batch.json: readable"),
        ("details", ["not", "a", "dict"], "batch.json: readable"),
    ],
)
def test_a_crafted_batch_json_is_quarantined_with_its_reason_and_writes_only_inside_the_plant(
    tmp_path: Path, field: str, value: object, rule: str
) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    batch = _batch(store)
    _rewrite_batch_json(store, batch.prefix, **{field: value})
    before = _snapshot(store)

    result = run_gate(store, CFG, batch.prefix)  # a verdict, not an exception

    assert result.verdict == "quarantined" and result.manifest_id is None
    assert rule in {r.rule for _, r in result.failed()}, result.failed()
    assert (result.line, result.batch_id) == ("line-1", batch.batch_id), "keys come from the folder"
    written = {k for k in _snapshot(store) if k not in before}
    assert written and all(k.startswith(("plant-b/line-1/", "reports/plant-b/")) for k in written), written
    status = json.loads(store.get(f"plant-b/line-1/validation/{batch.batch_id}.json"))
    assert status["verdict"] == "quarantined" and any(rule in r for r in status["failed_rules"])
    assert not list(store.list("datasets/")), "nothing crafted reaches a dataset"


def test_batch_json_that_is_not_json_or_too_deep_is_quarantined(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    batch = _batch(store)
    for body in (b"{not json", b"[" * 100_000 + b"]" * 100_000, b'{"plant": "plant-b"}'):
        store.put(f"{batch.prefix}/batch.json", body)
        result = run_gate(store, CFG, batch.prefix)
        assert result.verdict == "quarantined"
        assert "batch.json: readable" in {r.rule for _, r in result.failed()}


def test_a_metadata_image_key_that_walks_out_is_quarantined_not_a_crash(tmp_path: Path) -> None:
    from andon.data.batches import frame_to_parquet, parquet_to_frame

    store = LocalObjectStore(tmp_path / "objects")
    batch = _batch(store)
    meta = parquet_to_frame(store.get(batch.metadata_key))
    meta.loc[0, "image_key"] = "../../plant-a/line-1/raw/2026-11-09/x/images/a.png"
    store.put(batch.metadata_key, frame_to_parquet(meta))
    result = run_gate(store, CFG, batch.prefix)
    assert result.verdict == "quarantined"


def test_a_batch_id_another_batch_holds_never_replaces_that_batchs_verdict(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    first = _batch(store)
    accepted = run_gate(store, CFG, first.prefix)
    assert accepted.accepted, accepted.failed()
    status_key = f"plant-b/line-1/validation/{first.batch_id}.json"
    record = store.get(status_key)

    # the same batch id on another day (a consistent batch.json: only the id clashes)
    twin = first.prefix.replace(f"/{first.date}/", "/2026-11-10/")
    _copy_batch(store, first.prefix, twin)
    _rewrite_batch_json(store, twin, date="2026-11-10", prefix=twin)
    result = run_gate(store, CFG, twin)

    assert result.verdict == "quarantined"
    assert "batch id: unique on its line" in {r.rule for _, r in result.failed()}
    assert store.get(status_key) == record, "the accepted batch's verdict is write-once"
    assert not list(store.list(f"plant-b/line-1/quarantine/{first.batch_id}/")), "its quarantine folder untouched"
    assert result.status_key != status_key and result.quarantine_prefix
    assert result.quarantine_prefix.startswith(f"plant-b/line-1/quarantine/{first.batch_id}~")
    assert (verdict_of(store, CFG, first.prefix) or {})["verdict"] == "accepted"
    assert (verdict_of(store, CFG, twin) or {})["verdict"] == "quarantined"
    # and again: the twin's own verdict is found and rewritten in its own place, the first's still untouched
    assert run_gate(store, CFG, twin).status_key == result.status_key and store.get(status_key) == record


# ---------------------------------------------------------------- ingest: collisions, content addressing


def _png(value: int) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((300, 300), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _folder(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def test_ingest_refuses_files_whose_key_safe_names_collide(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    cfg = load_plant("plant-a")
    for names in (("ok/a b.png", "ok/a_b.png", "ok/a+b.png"), ("ok/x.png", "ok/x.jpg")):
        src = _folder(tmp_path / f"src-{len(names)}", {n: _png(i * 40) for i, n in enumerate(names)})
        with pytest.raises(DataError, match="would become the same part"):
            ingest_folder(cfg, store, src, start=START)
        assert not list(store.list("")), "nothing was uploaded"


def test_batch_ids_are_content_addressed_and_raw_data_is_write_once(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    cfg = load_plant("plant-a")
    names = ["ok/p1.png", "ok/p2.png", "defect/p3.png"]
    a = _folder(tmp_path / "day-1" / "set", {n: _png(10 + i) for i, n in enumerate(names)})
    b = _folder(tmp_path / "day-2" / "set", {n: _png(100 + i) for i, n in enumerate(names)})  # same names, labels

    (first,) = ingest_folder(cfg, store, a, start=START)
    raw = _snapshot(store, f"{first.prefix}/")
    (second,) = ingest_folder(cfg, store, b, start=START)
    assert second.batch_id != first.batch_id, "different images, different batch"
    assert _snapshot(store, f"{first.prefix}/") == raw, "the first batch's raw data is untouched"

    (again,) = ingest_folder(cfg, store, a, start=START)  # the same images again: the same batch, nothing rewritten
    assert again.batch_id == first.batch_id and _snapshot(store, f"{first.prefix}/") == raw

    # the same images with other labels: the same id, refused, never overwritten
    relabelled = _folder(
        tmp_path / "day-3" / "set", {n.replace("ok/", "defect/"): _png(10 + i) for i, n in enumerate(names)}
    )
    with pytest.raises(DataError, match="write-once"):
        ingest_folder(cfg, store, relabelled, start=START)
    assert _snapshot(store, f"{first.prefix}/") == raw
    assert read_batch_info(store, first.uri_key).batch_id == first.batch_id


def test_a_partial_batch_with_other_bytes_is_refused(tmp_path: Path) -> None:
    from andon.data.batches import put_once

    store = LocalObjectStore(tmp_path / "objects")
    assert put_once(store, "plant-a/k.png", b"one") and not put_once(store, "plant-a/k.png", b"one")
    with pytest.raises(DataError, match="already holds different bytes"):
        put_once(store, "plant-a/k.png", b"two")
    assert store.get("plant-a/k.png") == b"one"


# ---------------------------------------------------------------- scoring needs the gate's acceptance


def test_andon_score_refuses_a_quarantined_or_never_validated_batch(andon_home: Path) -> None:
    store = open_store()
    batch = _batch(store, seed=3)
    runner = CliRunner()
    args = ["score", batch.prefix, "--plant", "plant-b"]

    never = runner.invoke(app, args)
    assert never.exit_code != 0 and isinstance(never.exception, DataError | SystemExit)
    assert "never validated" in str(never.exception) + never.output

    _rewrite_batch_json(store, batch.prefix, line="../../plant-a/line-1")
    assert run_gate(store, CFG, batch.prefix).verdict == "quarantined"
    refused = runner.invoke(app, args)
    assert refused.exit_code != 0 and "quarantined by the data gate" in str(refused.exception) + refused.output
    assert not list(store.list("predictions/")), "nothing was scored"


# ---------------------------------------------------------------- label imports


def test_a_label_import_with_bad_dates_or_deep_json_is_a_clear_error(tmp_path: Path, andon_home: Path) -> None:
    from andon.labeling.queue import import_annotations

    cfg = load_plant("plant-a")
    store = open_store()

    def task(when: object, i: int = 1) -> dict[str, object]:
        ann = {"result": [{"value": {"choices": ["defect"]}}], "created_at": when}
        return {"id": i, "data": {"part_id": f"plant-a-{i}"}, "annotations": [ann]}

    for when in (
        "²",
        "9" * 400,
        "0001-01-01T00:00:00+14:00",
        "2262-06-01T00:00:00Z",
        "2026-13-45",
        12,
        ["x"],
        {"a": 1},
    ):
        with pytest.raises(DataError, match=r"task 1 .*(reviewed_at|not a)"):
            import_annotations(store, cfg, [task(when)])
    for shape in (
        [{"data": "x"}],
        [{"data": {"part_id": "p"}, "annotations": "x"}],
        [{"data": {"part_id": "p"}, "annotations": [{"result": [1]}]}],
    ):
        with pytest.raises(DataError, match="cannot be imported"):
            import_annotations(store, cfg, shape)
    assert not list(store.list("labels/")), "all or nothing: nothing was imported"

    runner = CliRunner()
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000 + "]" * 200_000)
    bad_date = tmp_path / "bad.json"
    bad_date.write_text(json.dumps([task("²")]))
    for path, says in ((deep, "nested too deeply"), (bad_date, "reviewed_at")):
        out = runner.invoke(app, ["label", "import", "--plant", "plant-a", str(path)])
        assert out.exit_code != 0 and isinstance(out.exception, DataError), out.exception
        assert says in str(out.exception)


# ---------------------------------------------------------------- audit evidence is keyed by the decision


def test_rescoring_a_part_keeps_each_decisions_overlay_and_the_audit_shows_its_own(
    andon_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np
    import torch
    from torch import nn

    import andon.explain.audit
    from andon.explain.audit import audit_report
    from andon.scoring.batch import Champion, explain_parts
    from andon.scoring.predlog import PredictionLog

    monkeypatch.setattr(andon.explain.audit, "lineage", lambda name, version: {})
    cfg, store = load_plant("plant-a"), open_store()
    torch.manual_seed(0)
    images = np.random.default_rng(0).integers(0, 255, (1, 32, 32), dtype=np.uint8)
    rows: list[dict[str, object]] = []
    for version, minute in ((2, 0), (3, 30)):  # v2 decided, then v3 re-scored the same part
        model = nn.Sequential(
            nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2)
        )
        champion = Champion("plant-a.surface-defects", version, model.eval(), ["ok", "defect"], 32, None)  # type: ignore[arg-type]
        row: dict[str, object] = {
            "part_id": "../P-1",
            "line": "line-1",
            "scored_at": START.replace(minute=minute),
            "model_name": champion.name,
            "model_version": version,
            "predicted_class": "defect",
            "probabilities": [0.3, 0.7] if version == 2 else [0.1, 0.9],
        }
        explain_parts(store, cfg, champion, images, [row])
        rows.append(row)
    k2, k3 = (str(r["explanation_key"]) for r in rows)
    assert k2 != k3, "one overlay per decision"
    assert k2.startswith("explanations/plant-a/2026-11-09/_._P-1/plant-a.surface-defects-v2-20261109T060000")
    assert store.exists(k2) and store.exists(k3) and store.get(k2) != store.get(k3), "v2's evidence survives v3"

    PredictionLog(store, "plant-a").append(rows)
    report = audit_report(store, cfg, START, START.replace(hour=7), tmp_path / "audit")
    html = report.html_path.read_text()
    body = html.split("<tbody>", 1)[1]
    v2_row, v3_row = sorted(body.split("</tr>")[:2], key=lambda r: "<b>v3</b>" in r)
    for row_html, key in ((v2_row, k2), (v3_row, k3)):
        assert andon.explain.audit._thumb(store.get(key), andon.explain.audit.OVERLAY_PX) in row_html, (
            "the overlay of that decision"
        )
