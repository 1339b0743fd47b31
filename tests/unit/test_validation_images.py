"""Image rules on bad files: each a clear, named failure; nothing crashes."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from andon.validation.images import image_stats_from_bytes, validate_images
from andon.validation.profile import learn_images


def _jpeg(size: int = 64, mode: str = "RGB", value: int = 120, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    grey = np.clip(rng.normal(value, 25, (size, size)), 0, 255).astype(np.uint8)
    img = Image.fromarray(grey).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _stats(files: dict[str, bytes]) -> pd.DataFrame:
    return pd.DataFrame([image_stats_from_bytes(k, v) for k, v in files.items()])


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file (0 bytes)"),
        (b"just some text, named .jpg", "not an image"),
        (_jpeg()[:300], "does not decode"),
        (_jpeg()[:20] + b"\x00" * 200, "not an image"),
    ],
)
def test_bad_files_get_a_reason(data: bytes, reason: str) -> None:
    row = image_stats_from_bytes("x.jpg", data)
    assert row["decodes"] is False and reason in row["error"]


def test_batch_rules_name_each_problem() -> None:
    good = {f"b/images/p{i}.jpg": _jpeg(seed=i) for i in range(20)}
    stats = _stats(good)
    meta_keys = set(good)
    assert validate_images(stats, meta_keys, (64, 64), "RGB").success

    bad = dict(good)
    bad["b/images/corrupt.jpg"] = _jpeg()[:300]
    bad["b/images/small.jpg"] = _jpeg(size=32, seed=99)
    bad["b/images/grey.jpg"] = _jpeg(mode="L", seed=98)
    bad["b/images/copy.jpg"] = good["b/images/p0.jpg"]
    keys = set(bad) - {"b/images/copy.jpg"} | {"b/images/missing.jpg"}  # a row without its image
    report = validate_images(_stats(bad), keys, (64, 64), "RGB")
    failed = {r.rule: r for r in report.failed}
    assert [e["image_key"] for e in failed["image: decodes"].examples] == ["b/images/corrupt.jpg"]
    assert "does not decode" in failed["image: decodes"].examples[0]["error"]
    assert [e["image_key"] for e in failed["image: width 64 px"].examples] == ["b/images/small.jpg"]
    assert [e["image_key"] for e in failed["image: colour mode RGB"].examples] == ["b/images/grey.jpg"]
    assert failed["image: no duplicate content (sha256)"].unexpected_count == 2
    assert [e["image_key"] for e in failed["image: has a metadata row"].examples] == ["b/images/copy.jpg"]
    assert [e["image_key"] for e in failed["metadata row: has its image"].examples] == ["b/images/missing.jpg"]


def test_learned_bounds_flag_a_dark_batch_not_a_healthy_one() -> None:
    reference = _stats({f"r{i}.jpg": _jpeg(value=120 + (i % 7), seed=i) for i in range(60)})
    profile = learn_images(reference, min_batch_rows=20)
    healthy = _stats({f"h{i}.jpg": _jpeg(value=121 + (i % 5), seed=100 + i) for i in range(20)})
    assert validate_images(healthy, profile=profile).success
    dark = _stats({f"d{i}.jpg": _jpeg(value=80, seed=200 + i) for i in range(20)})
    failed = {r.rule for r in validate_images(dark, profile=profile).failed}
    assert any(r.startswith("batch: mean brightness") for r in failed)
    assert any(r.startswith("image: brightness within learned") for r in failed)


def _png(pixels: np.ndarray, mode: str | None = None) -> bytes:
    img = Image.fromarray(pixels) if mode is None else Image.fromarray(pixels).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _reference(data: bytes) -> tuple[np.ndarray, float, float, float]:
    """Pillow's grey pixels and the statistics' definitions written out in numpy."""
    grey = np.asarray(Image.open(io.BytesIO(data)).convert("L"))
    g = grey.astype(np.float64)
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    return grey, float(g.mean()), float(g.std()), float(lap.var()) if lap.size else float("nan")


@pytest.mark.parametrize("kind", ["grey-png", "grey-png-odd-size", "grey-png-smooth", "rgb-png", "16-bit-png"])
def test_every_decode_path_gives_pillows_pixels_and_the_defined_statistics(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An 8-bit grey PNG is decoded by OpenCV (off the GIL), every other image by Pillow: the
    pixels handed on and the statistics are the same either way."""
    import cv2

    decoded: list[int] = []
    imdecode = cv2.imdecode
    monkeypatch.setattr(cv2, "imdecode", lambda *a: decoded.append(1) or imdecode(*a))
    rng = np.random.default_rng(7)
    shape = (37, 53) if kind == "grey-png-odd-size" else (64, 64)
    grey = rng.integers(0, 256, shape, dtype=np.uint8)
    if kind == "rgb-png":
        data = _png(grey, "RGB")
    elif kind == "16-bit-png":
        data = _png(grey.astype(np.uint16) * 200)
    elif kind == "grey-png-smooth":
        data = _png(np.tile(np.arange(64, dtype=np.uint8) * 3, (64, 1)))
    else:
        data = _png(grey)
    seen: list[Image.Image] = []
    row = image_stats_from_bytes("p.png", data, on_grey=seen.append)
    pixels, brightness, contrast, sharpness = _reference(data)
    assert row["decodes"] is True and np.array_equal(np.asarray(seen[0]), pixels)
    assert row["brightness"] == pytest.approx(brightness, rel=1e-6)
    assert row["contrast"] == pytest.approx(contrast, rel=1e-6)
    assert row["sharpness"] == pytest.approx(sharpness, rel=1e-6)
    assert decoded == ([1] if kind.startswith("grey-png") else [])


def test_a_corrupt_or_tiny_grey_png_still_gets_pillows_reason_or_a_nan_sharpness() -> None:
    data = bytearray(_png(np.random.default_rng(1).integers(0, 256, (40, 40), dtype=np.uint8)))
    data[60] ^= 0xFF  # inside the compressed pixels: OpenCV refuses it, Pillow names why
    row = image_stats_from_bytes("p.png", bytes(data))
    assert row["decodes"] is False and row["error"].startswith("does not decode")
    tiny = image_stats_from_bytes("t.png", _png(np.full((2, 2), 9, np.uint8)))
    assert tiny["decodes"] is True and tiny["brightness"] == 9 and np.isnan(tiny["sharpness"])
