"""The one image transform: camera bytes -> the grey square a model sees.

Training, batch scoring, ``andon serve``, explanations, the promotion gate and the governance
matrix all call :func:`model_input` with the version's preprocessing spec, so a model never sees
pixels prepared another way than the ones it learned from. Real cameras do not all send one
square size; the recipe declares how an image of any size becomes the model's input
(``recipe.image.transform``):

- ``resize``: stretch to ``size x size`` (the aspect ratio is lost; fine for square cameras);
- ``letterbox``: scale the longer side to ``size``, keep the aspect ratio, pad the rest with black
  (nothing of the part is cut off: the default for parts of varying shape);
- ``center_crop``: scale the shorter side to ``size`` and cut the middle square (for parts centred in
  a wider field of view).

JPEGs are decoded straight to grey at the smallest DCT scale that still covers the target (what
``Image.draft`` does), which is both faster and exactly reproducible.

Example:
    >>> import io
    >>> from PIL import Image
    >>> buf = io.BytesIO(); Image.new("L", (300, 200), 128).save(buf, "PNG")
    >>> model_input(buf.getvalue(), 64, "letterbox").shape
    (64, 64)
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Literal

from andon.errors import DataError

if TYPE_CHECKING:
    import numpy as np

Transform = Literal["resize", "letterbox", "center_crop"]
TRANSFORMS: tuple[str, ...] = ("resize", "letterbox", "center_crop")


def _target(width: int, height: int, size: int, transform: str) -> tuple[int, int]:
    """The size the whole image is scaled to before padding (letterbox) or cropping (centre crop)."""
    if transform == "resize":
        return size, size
    if transform == "letterbox":
        scale = size / max(width, height)
    elif transform == "center_crop":
        scale = size / min(width, height)
    else:
        raise DataError(f"unknown input transform {transform!r}; known: {', '.join(TRANSFORMS)}")
    return max(1, round(width * scale)), max(1, round(height * scale))


def model_input(data: bytes, size: int, transform: str = "resize") -> np.ndarray:
    """``uint8 (size, size)`` grey model input from encoded image bytes (PNG, JPEG, BMP...)."""
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        tw, th = _target(img.width, img.height, size, transform)
        if img.format == "JPEG":
            img.draft("L", (tw, th))
        grey = img.convert("L")
        if grey.size != (tw, th):
            grey = grey.resize((tw, th), Image.Resampling.BILINEAR, reducing_gap=2.0)
        if transform == "letterbox" and (tw, th) != (size, size):
            canvas = Image.new("L", (size, size), 0)
            canvas.paste(grey, ((size - tw) // 2, (size - th) // 2))
            grey = canvas
        elif transform == "center_crop" and (tw, th) != (size, size):
            left, top = (tw - size) // 2, (th - size) // 2
            grey = grey.crop((left, top, left + size, top + size))
        return np.array(grey, dtype=np.uint8)  # a writable copy: torch.from_numpy wants one


def size_problem(width: int, height: int, side_range: tuple[int, int]) -> str | None:
    """Why a ``width x height`` image is outside the camera's declared side range, or None."""
    lo, hi = side_range
    if lo <= width <= hi and lo <= height <= hi:
        return None
    if lo == hi:
        return f"size {width}x{height}, expected {lo}x{lo}"
    return f"size {width}x{height}, outside the camera's range of {lo}-{hi} px per side"
