from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from andon.config import load_plant
from andon.data.batches import parquet_to_frame, sha256_bytes
from andon.data.ingest import ingest_folder, label_from_path
from andon.errors import DataError
from andon.storage import LocalObjectStore

START = datetime(2026, 11, 3, 8, 0, tzinfo=UTC)


def _folder(root: Path, layout: dict[str, int]) -> Path:
    rng = np.random.default_rng(0)
    for sub, n in layout.items():
        (root / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(root / sub / f"img_{i}.jpeg")
    return root


@pytest.mark.parametrize(
    ("path", "label"),
    [
        ("casting/train/def_front/x.jpeg", "defect"),
        ("casting/test/ok_front/x.jpeg", "ok"),
        ("set/NG/x.png", "defect"),
        ("set/good/x.png", "ok"),
        ("set/default/x.png", None),
        ("x.png", None),
    ],
)
def test_labels_from_folder_names(path: str, label: str | None) -> None:
    assert label_from_path(Path(path)) == label


def test_ingest_keeps_bytes_is_idempotent_and_slices_evenly(tmp_path: Path) -> None:
    src = _folder(tmp_path / "parts", {"def_front": 30, "ok_front": 20})
    store = LocalObjectStore(tmp_path / "objects")
    cfg = load_plant("plant-a")
    batches = ingest_folder(cfg, store, src, start=START, batch_size=20)
    assert [b.parts for b in batches] == [20, 20, 10]
    assert sum(b.defects for b in batches) == 30
    meta = parquet_to_frame(store.get(batches[0].metadata_key))
    first = meta.iloc[0]
    original = src.parent / first.source
    assert store.get(first.image_key) == original.read_bytes(), "ingest must not re-encode images"
    assert first.sha256 == sha256_bytes(original.read_bytes())
    assert first.line == "line-1" and first.sku == "IMP-300"
    assert first.label == ("defect" if "def_front" in first.source else "ok")
    assert [b.defects for b in batches] == [20, 10, 0]  # sorted by folder by default
    # mixed: in a fixed interleaved order, as a line makes parts; every full batch holds both labels
    mixed = ingest_folder(cfg, LocalObjectStore(tmp_path / "o3"), src, start=START, batch_size=20, mixed=True)
    assert all(0 < b.defects < b.parts for b in mixed[:2]) and sum(b.defects for b in mixed) == 30
    keys = sorted(o.key for o in store.list(""))
    again = ingest_folder(cfg, store, src, start=START, batch_size=20)
    assert again == batches and sorted(o.key for o in store.list("")) == keys, "ingest is idempotent"

    # a slice keeps the folder's label mix
    sliced = ingest_folder(cfg, LocalObjectStore(tmp_path / "o2"), src, start=START, limit=10, line="line-2")
    assert sliced[0].parts == 10 and sliced[0].defects == 6 and sliced[0].line == "line-2"


def test_ingest_bad_input(tmp_path: Path) -> None:
    cfg = load_plant("plant-a")
    store = LocalObjectStore(tmp_path / "objects")
    with pytest.raises(DataError, match="not a folder"):
        ingest_folder(cfg, store, tmp_path / "missing")
    empty = tmp_path / "empty"
    (empty / "ok").mkdir(parents=True)
    (empty / "ok" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="no images found"):
        ingest_folder(cfg, store, empty)
    unlabelled = _folder(tmp_path / "mixed", {"ok": 2, "misc": 1})
    with pytest.raises(DataError, match=r"1 image\(s\) .* have no label folder \(e.g. misc/img_0.jpeg\)"):
        ingest_folder(cfg, store, unlabelled)
    with pytest.raises(DataError, match="no line 'line-7'"):
        ingest_folder(cfg, store, _folder(tmp_path / "p", {"ok": 1}), line="line-7")
    with pytest.raises(DataError, match="no SKU 'X-1'"):
        ingest_folder(cfg, store, tmp_path / "p", sku="X-1")
    assert list(store.list("")) == [], "a refused ingest writes nothing"
