"""The gate on real manufacturing data (read in place from ../shared/data; skipped when absent):
AI4I 2020 with planted faults, SECOM's later months against bounds learned on its first month,
and the casting images with darker, blurred and corrupted copies."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image, ImageFilter

from andon.config import load_plant
from andon.data.ingest import ingest_folder
from andon.data.public import read_ai4i, read_secom
from andon.storage import LocalObjectStore
from andon.validation.gate import run_gate
from andon.validation.learn import learn_from_batches
from andon.validation.profile import learn_table
from andon.validation.spec import load_table_spec
from andon.validation.tables import validate_table

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is not here (see ../shared/data/README.md)")
    return path


@pytest.fixture(scope="module")
def ai4i() -> pd.DataFrame:
    return read_ai4i(_need(DATA / "ai4i2020" / "ai4i2020.csv"))


def _fails(frame: pd.DataFrame) -> set[str]:
    return {r.rule for r in validate_table(frame, load_table_spec("ai4i2020")).failed}


def test_ai4i_clean_file_passes(ai4i: pd.DataFrame) -> None:
    report = validate_table(ai4i, load_table_spec("ai4i2020"))
    assert report.success, [r.rule for r in report.failed]
    assert report.rows == 10_000


def test_ai4i_planted_faults_fail_on_the_right_rule(ai4i: pd.DataFrame) -> None:
    celsius = ai4i.copy()
    celsius.loc[5000:5099, "Air temperature [K]"] -= 273.15  # one shift's logger switched to Celsius
    assert _fails(celsius) == {"Air temperature [K]: physical range [290, 310]"}

    unknown_type = ai4i.copy()
    unknown_type.loc[[10, 20, 30], "Type"] = "X"
    assert _fails(unknown_type) == {"Type: in {L, M, H}"}

    shuffled = ai4i.sample(frac=1.0, random_state=0).reset_index(drop=True)
    assert _fails(shuffled) == {"UDI: strictly increasing"}

    # keep 20 of the 339 failures: a 0.2 % failure rate means the failure logging broke
    failures = ai4i.index[ai4i["Machine failure"] == 1]
    rare = ai4i.drop(failures[20:]).reset_index(drop=True)
    assert rare["Machine failure"].mean() == pytest.approx(0.002, abs=0.0005)
    assert {r.split(" (n=")[0] for r in _fails(rare)} == {"machine failure rate: within [1.0%, 8.0%]"}


def test_secom_later_months_against_the_first(capsys: pytest.CaptureFixture[str]) -> None:
    """Bounds learned on the first 30 days; the later months are reported as they are."""
    secom = read_secom(_need(DATA / "secom" / "secom.zip"))
    spec = load_table_spec("secom")
    ts = pd.to_datetime(secom["timestamp"], format="%d/%m/%Y %H:%M:%S")
    month = (ts - ts.iloc[0]).dt.days // 30
    first = secom[month == 0]
    profile = learn_table(first, spec, min_batch_rows=100)
    assert len(profile.columns) > 500  # every non-empty sensor column got bounds
    assert validate_table(first, spec, profile).success, "the reference passes its own bounds"
    drifted = {}
    for m in (1, 2):
        report = validate_table(secom[month == m], spec, profile)
        failed = {r.rule: r.unexpected_count for r in report.failed}
        # timestamps are monotonic and the fail rate stays plausible in every month
        assert not [r for r in failed if r.startswith(("timestamp", "fail rate", "label", "schema"))], failed
        drifted[m] = failed
        print(f"SECOM month {m + 1}: {len(secom[month == m])} runs, {failed}")
    # the process drifts: more columns leave the first month's bounds as time goes on
    out = {m: sum(v or 0 for k, v in f.items() if "column means" in k) for m, f in drifted.items()}
    assert 0 < out[1] < out[2], out


def _casting_copy(src: Path, dst: Path, n: int, change) -> Path:  # type: ignore[no-untyped-def]
    """n images of each class from ``src`` into ``dst/<class>/``, transformed by ``change``."""
    for cls in ("def_front", "ok_front"):
        (dst / cls).mkdir(parents=True, exist_ok=True)
        for f in sorted((src / cls).iterdir())[:n]:
            data = change(f.read_bytes())
            (dst / cls / f.name).write_bytes(data)
    return dst


def _pil(fn):  # type: ignore[no-untyped-def]
    def change(data: bytes) -> bytes:
        img = fn(Image.open(io.BytesIO(data)))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=95)
        return buf.getvalue()

    return change


def test_casting_reference_passes_and_changed_copies_fail(tmp_path: Path) -> None:
    casting = _need(DATA / "casting")
    cfg = load_plant("plant-a")
    store = LocalObjectStore(tmp_path / "objects")
    (reference,) = ingest_folder(cfg, store, casting / "train", limit=300, batch_size=500)
    assert run_gate(store, cfg, reference.prefix).accepted, "the train split passes the config rules"
    profile, _ = learn_from_batches(store, cfg, [reference.prefix], root=tmp_path / "profiles")

    def gate(name: str, change) -> set[str]:  # type: ignore[no-untyped-def]
        folder = _casting_copy(casting / "test", tmp_path / name, 40, change)
        (batch,) = ingest_folder(cfg, store, folder, line="line-2")
        result = run_gate(store, cfg, batch.prefix, profile)
        return {r.rule.split(" within")[0] for _, r in result.failed()}

    assert gate("untouched", lambda d: d) == set(), "held-out real parts pass the learned bounds"
    assert "batch: mean brightness" in gate("darker", _pil(lambda im: Image.eval(im, lambda v: int(v * 0.6))))
    assert "batch: mean sharpness" in gate("blurred", _pil(lambda im: im.filter(ImageFilter.GaussianBlur(2))))
    corrupted = gate("corrupted", lambda d: d[: len(d) // 3] if d[100] % 4 == 0 else d)
    assert "image: decodes" in corrupted
    camera = profile.images[cfg.camera_signature("line-1")]
    assert camera.images == 300 and camera.lines == ["line-1", "line-2"], "lines with one camera share bounds"
