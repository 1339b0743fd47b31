"""Image checks: every file is in a camera format and decodes, has the expected size and colour mode, brightness /
contrast / sharpness within the bounds learned from a reference, no duplicate content, and a
metadata row for every image (and an image for every row).

Statistics are computed on the grey image: brightness = mean, contrast = standard deviation,
sharpness = variance of the 4-neighbour Laplacian (falls when focus or motion blur sets in).

Files are opened with :func:`andon.imaging.open_image`, the decode the scoring service uses too: a
format no camera sends, or a header that declares more pixels than the camera's largest side
allows (a decompression bomb), is a failed "decodes" row with its reason, never a decode.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from andon.imaging import CAMERA_FORMATS
from andon.validation.gx import Rule
from andon.validation.tables import TableReport

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from andon.config import Camera
    from andon.storage import ObjectStore
    from andon.validation.profile import ImageProfile

STAT_COLUMNS = ("brightness", "contrast", "sharpness")


def camera_image_rules(camera: Camera) -> dict[str, Any]:
    """The per-image rules of a camera (keyword arguments of :func:`validate_images`): the gate
    quarantines and the scoring service refuses on exactly these."""
    return {"size": camera.side_range(), "mode": camera.color_mode, "formats": CAMERA_FORMATS}


def image_stats_from_bytes(
    key: str, data: bytes, max_side: int | None = None, on_grey: Callable[[Any], None] | None = None
) -> dict[str, Any]:
    """One row of statistics; a file that is refused or does not decode gets ``decodes=False`` and
    the reason. Nothing larger than ``max_side`` pixels per side (or ``imaging.MAX_PIXELS`` in
    all) is decoded: its header is reported and the reason names its size. ``on_grey`` gets the
    full-size grey image of a PNG or BMP (not a JPEG: drafted for speed), so a caller that needs
    the pixels too decodes once."""
    from andon.imaging import ImageRefused, open_image

    row: dict[str, Any] = {
        "image_key": key,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "decodes": False,
        "error": None,
        "format": None,
        "width": None,
        "height": None,
        "mode": None,
        "brightness": None,
        "contrast": None,
        "sharpness": None,
    }
    try:
        with open_image(data, max_side=max_side) as img:
            row["format"], row["mode"] = img.format, img.mode
            row["width"], row["height"] = img.width, img.height
            grey = _grey_pixels(data, img)
            if on_grey is not None and img.format != "JPEG":
                from PIL import Image

                on_grey(Image.fromarray(grey))
    except ImageRefused as exc:
        row["error"], row["format"], row["mode"] = str(exc), exc.format, exc.mode
        if exc.size:
            row["width"], row["height"] = exc.size
        return row
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # truncated / corrupt streams
        row["error"] = f"does not decode: {exc}"
        return row
    row.update(decodes=True, **grey_stats(grey))
    return row


def _grey_pixels(data: bytes, img: Any) -> np.ndarray:
    """The grey pixels of an image opened from its header (:func:`andon.imaging.open_image`). An
    8-bit grey PNG, what inspection cameras write, is decoded by OpenCV, which lets go of the GIL
    while it inflates (the same pixels as Pillow's; scoring threads then run side by side); any
    other image, or bytes OpenCV cannot decode, by Pillow, whose error names the reason."""
    import numpy as np

    if img.format == "PNG" and img.mode == "L" and data[24:26] == b"\x08\x00":  # IHDR: 8 bits, grey
        import cv2

        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if pixels is not None and pixels.shape == (img.height, img.width) and pixels.dtype == np.uint8:
            return pixels
    if img.format == "JPEG":
        img.draft("L", img.size)  # decode straight to grey: same statistics, less work
    return np.asarray(img.convert("L"))


def grey_stats(grey: np.ndarray) -> dict[str, float]:
    """Brightness (mean), contrast (standard deviation) and sharpness (variance of the 4-neighbour
    Laplacian inside the border) of ``uint8 (H, W)`` grey pixels; OpenCV computes them without
    the GIL. An image under 3 pixels a side has no inside: its sharpness is NaN."""
    import cv2

    mean, std = cv2.meanStdDev(grey)
    sharpness = float("nan")
    if min(grey.shape) >= 3:
        lap = cv2.Laplacian(grey, cv2.CV_32F, ksize=1)  # the kernel's sign does not change a variance
        sharpness = float(cv2.meanStdDev(lap[1:-1, 1:-1])[1][0, 0]) ** 2
    return {"brightness": float(mean[0, 0]), "contrast": float(std[0, 0]), "sharpness": sharpness}


def image_stats(
    store: ObjectStore,
    keys: Iterable[str],
    workers: int = 4,
    progress: Callable[[int], None] | None = None,
    max_side: int | None = None,
) -> pd.DataFrame:
    """Statistics of every image, read from the store (threads overlap I/O and decoding, which
    releases the GIL in Pillow and numpy); nothing over ``max_side`` pixels per side is decoded."""
    import pandas as pd

    def one(key: str) -> dict[str, Any]:
        row = image_stats_from_bytes(key, store.get(key), max_side=max_side)
        if progress:
            progress(1)
        return row

    keys = list(keys)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        rows = list(pool.map(one, keys))
    frame = pd.DataFrame(rows, columns=list(image_stats_from_bytes("", b"").keys()))
    return frame


def image_rules(
    stats: pd.DataFrame,
    metadata_keys: set[str] | None,
    size: tuple[int, int] | None,
    mode: str | None,
    profile: ImageProfile | None,
    formats: tuple[str, ...] | None = None,
) -> tuple[pd.DataFrame, list[Rule]]:
    """``size``: the smallest and largest side (pixels) the camera sends (equal for a fixed crop)."""
    """The frame and rules of the image suite (one row per image file, plus orphan metadata rows)."""
    import pandas as pd

    frame = stats.copy()
    rules = [
        Rule("images: at least one", "ExpectTableRowCountToBeBetween", {"min_value": 1}),
        Rule(
            "image: decodes",
            "ExpectColumnValuesToBeInSet",
            {"column": "decodes", "value_set": [True]},
            "error",
        ),
        Rule(
            "image: no duplicate content (sha256)",
            "ExpectColumnValuesToBeUnique",
            {"column": "sha256"},
            "sha256",
        ),
    ]
    if metadata_keys is not None:
        frame["has_metadata"] = frame["image_key"].isin(metadata_keys)
        frame["has_image"] = True
        orphans = sorted(metadata_keys - set(frame["image_key"]))
        if orphans:
            extra = pd.DataFrame({"image_key": orphans, "has_image": False, "has_metadata": True, "decodes": True})
            frame = pd.concat([frame, extra], ignore_index=True)
        rules.append(
            Rule(
                "image: has a metadata row",
                "ExpectColumnValuesToBeInSet",
                {"column": "has_metadata", "value_set": [True]},
                "image_key",
            )
        )
        rules.append(
            Rule(
                "metadata row: has its image",
                "ExpectColumnValuesToBeInSet",
                {"column": "has_image", "value_set": [True]},
                "image_key",
            )
        )
    if "sha256_matches" in frame.columns:  # set by the gate from the metadata's recorded sha256
        frame["sha256_matches"] = frame["sha256_matches"].map(lambda v: v is not False)  # orphan rows: n/a
        rules.append(
            Rule(
                "image: sha256 matches its metadata row",
                "ExpectColumnValuesToBeInSet",
                {"column": "sha256_matches", "value_set": [True]},
                "image_key",
            )
        )
    if size is not None:  # (smallest, largest) side the camera sends: one number for a fixed crop
        lo, hi = size
        what = f"{lo} px" if lo == hi else f"{lo}-{hi} px"
        for side in ("width", "height"):
            rules.append(
                Rule(
                    f"image: {side} {what}",
                    "ExpectColumnValuesToBeBetween",
                    {"column": side, "min_value": lo, "max_value": hi},
                    side,
                )
            )
    if formats is not None:
        rules.append(
            Rule(
                f"image: format {', '.join(formats)}",
                "ExpectColumnValuesToBeInSet",
                {"column": "format", "value_set": list(formats)},
                "format",
            )
        )
    if mode is not None:
        rules.append(
            Rule(
                f"image: colour mode {mode}",
                "ExpectColumnValuesToBeInSet",
                {"column": "mode", "value_set": [mode]},
                "mode",
            )
        )
    if profile is not None:
        for stat in STAT_COLUMNS:
            b = getattr(profile, stat)
            frame[stat] = pd.to_numeric(frame[stat], errors="coerce")
            rules.append(
                Rule(
                    f"image: {stat} within learned [{b.low:.4g}, {b.high:.4g}] (90% of images)",
                    "ExpectColumnValuesToBeBetween",
                    {"column": stat, "min_value": b.low, "max_value": b.high, "mostly": 0.9},
                    stat,
                )
            )
            rules.append(
                Rule(
                    f"batch: mean {stat} within learned [{b.mean_low:.4g}, {b.mean_high:.4g}]",
                    "ExpectColumnMeanToBeBetween",
                    {"column": stat, "min_value": b.mean_low, "max_value": b.mean_high},
                    stat,
                )
            )
    return frame, rules


def validate_images(
    stats: pd.DataFrame,
    metadata_keys: set[str] | None = None,
    size: tuple[int, int] | None = None,
    mode: str | None = None,
    profile: ImageProfile | None = None,
    formats: tuple[str, ...] | None = None,
) -> TableReport:
    from andon.validation.gx import run_rules

    frame, rules = image_rules(stats, metadata_keys, size, mode, profile, formats)
    return TableReport("images", len(stats), run_rules(frame, rules, id_column="image_key", suite_name="images"))
