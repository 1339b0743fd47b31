"""Hostile input at the data gate: a decompression bomb is quarantined with a reason (never a
crash, never a decode), only the formats a camera sends pass, and timestamps from the future fail."""

from __future__ import annotations

import io
import struct
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFile

from andon.config import load_plant
from andon.imaging import MAX_PIXELS, decode_problem, open_image
from andon.storage import LocalObjectStore
from andon.validation.images import image_stats_from_bytes
from andon.validation.spec import metadata_spec
from andon.validation.tables import validate_table

pytestmark = pytest.mark.integration

CFG = load_plant("plant-b")


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def real_bomb(side: int) -> bytes:
    """A complete, valid grey PNG of ``side x side`` zeros: a few hundred KB that decode to
    ``side**2`` bytes (and to 4x that as float32 statistics)."""
    comp = zlib.compressobj(9)
    row = b"\0" * (side + 1)  # filter byte + pixels
    idat = b"".join(comp.compress(row * 500) for _ in range(side // 500)) + comp.compress(row * (side % 500))
    idat += comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def header_only(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 100))


def _image(fmt: str = "PNG", mode: str = "L", size: int = 128) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).convert(mode).save(buf, fmt)
    return buf.getvalue()


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any pixel decode fails the test: refusals must come from the header alone."""

    def load(self: ImageFile.ImageFile) -> None:
        raise AssertionError(f"decoded a {self.size} {self.format} image that the header should have refused")

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)


@pytest.mark.parametrize("side", [13_000])
def test_a_real_bomb_is_refused_before_any_pixel_is_decoded(no_decoding: None, side: int) -> None:
    bomb = real_bomb(side)
    assert len(bomb) < 400_000
    row = image_stats_from_bytes("b/images/bomb.png", bomb)
    assert row["decodes"] is False and f"{side}x{side}" in row["error"], row
    assert (row["width"], row["height"]) == (side, side)  # the header is still reported
    # within the camera's range the same check refuses a much smaller image
    row = image_stats_from_bytes("b/images/big.png", _image(size=512), max_side=128)
    assert row["decodes"] is False and "512x512" in row["error"]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (header_only(20_000, 20_000), "20000x20000"),  # Pillow's own bomb error, caught
        (header_only(200_000, 200_000), "200000x200000"),
        (header_only(1, MAX_PIXELS + 1), f"1x{MAX_PIXELS + 1}"),
        (_image("GIF", "P"), "format GIF"),
        (_image("TIFF"), "format TIFF"),
        (_image("WEBP"), "format WEBP"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 30, "not an image"),
    ],
)
def test_every_refusal_has_a_reason_and_nothing_is_raised(no_decoding: None, data: bytes, reason: str) -> None:
    row = image_stats_from_bytes("b/images/x", data)
    assert row["decodes"] is False and reason in row["error"], row


def test_open_image_is_the_one_safe_decode() -> None:
    """The service and the gate decode through ``open_image``: it refuses with the same reasons."""
    assert decode_problem(header_only(20_000, 20_000)) is not None
    with open_image(_image(), max_side=128) as img:
        assert img.size == (128, 128) and img.format == "PNG"


def test_a_bomb_in_a_batch_is_quarantined_with_its_reason(tmp_path: Path) -> None:
    from andon.synth.plant import synthesize_plant
    from andon.validation.gate import QUARANTINED, batch_status, run_gate

    store = LocalObjectStore(tmp_path / "objects")
    (batch,) = synthesize_plant(
        CFG,
        store,
        20,
        seed=5,
        defect_rate=0.05,
        start=datetime(2026, 11, 15, 9, tzinfo=UTC),
        lines=["line-1"],
        workers=1,
    )
    victim = sorted(o.key for o in store.list(f"{batch.prefix}/images/"))[3]
    gif = sorted(o.key for o in store.list(f"{batch.prefix}/images/"))[4]
    store.put(victim, header_only(20_000, 20_000), "image/png")
    store.put(gif, _image("GIF", "P"), "image/png")
    result = run_gate(store, CFG, batch.prefix)
    assert result.verdict == QUARANTINED
    failed = {r.rule: r for _, r in result.failed()}
    decodes = failed["image: decodes"]
    examples = {e["image_key"]: e["error"] for e in decodes.examples}
    assert "20000x20000" in examples[victim] and "format GIF" in examples[gif], examples
    assert any(rule.startswith("image: format") for rule in failed), sorted(failed)
    status = batch_status(store, CFG, batch.line, batch.batch_id)
    assert status is not None and status["verdict"] == QUARANTINED
    assert store.exists(f"{result.quarantine_prefix}/result.json")


def _metadata(timestamps: list[str]) -> pd.DataFrame:
    n = len(timestamps)
    return pd.DataFrame(
        {
            "part_id": [f"p{i}" for i in range(n)],
            "timestamp": timestamps,
            "line": ["line-1"] * n,
            "sku": ["DSC-100"] * n,
            "label": ["ok"] * n,
            "image_key": [f"k{i}" for i in range(n)],
            "sha256": ["0" * 64] * n,
        }
    )


NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)
FUTURE = "timestamp: not in the future"


def _failed(frame: pd.DataFrame, now: datetime = NOW) -> dict[str, list[object]]:
    report = validate_table(frame, metadata_spec(CFG, "curated"), now=now)
    return {r.rule: [e.get("timestamp") for e in r.examples] for r in report.failed}


def test_timestamps_from_the_future_fail_the_gate() -> None:
    ok = [f"2026-11-30T{h:02d}:00:00+00:00" for h in range(8, 12)]
    assert not _failed(_metadata(ok))
    # within the tolerance (a camera clock a few minutes fast) is not an error
    assert not _failed(_metadata([*ok, (NOW + timedelta(minutes=5)).isoformat()]))
    failed = _failed(_metadata([*ok, "2262-01-01T00:00:00+00:00", "2026-12-01T12:00:00+00:00"]))
    rule = next(r for r in failed if r.startswith(FUTURE))
    assert sorted(map(str, failed[rule])) == ["2026-12-01T12:00:00+00:00", "2262-01-01T00:00:00+00:00"]
    # past pandas' range: not parseable (never silently accepted)
    failed = _failed(_metadata([*ok, "2263-01-01T00:00:00+00:00"]))
    assert "timestamp: parseable" in failed


@pytest.mark.parametrize(
    "odd", ["2026-11-30T10:00:00²", "9" * 400, "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "\x00"]
)
def test_odd_timestamps_are_a_failed_rule_not_a_crash(odd: str) -> None:
    failed = _failed(_metadata(["2026-11-30T08:00:00+00:00", odd]))
    assert failed, odd
