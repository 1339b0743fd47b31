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

Every decode of untrusted bytes (the service's request bodies, the gate's raw batches) goes through
:func:`open_image`: only the formats a camera sends are opened, and the header's size is checked
before a single pixel is decoded, so a 160 KB PNG that declares 13000 x 13000 pixels is refused
from its header instead of taking gigabytes to find out.

Example:
    >>> import io
    >>> from PIL import Image
    >>> buf = io.BytesIO(); Image.new("L", (300, 200), 128).save(buf, "PNG")
    >>> model_input(buf.getvalue(), 64, "letterbox").shape
    (64, 64)
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Literal

from andon.errors import DataError

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

Transform = Literal["resize", "letterbox", "center_crop"]
TRANSFORMS: tuple[str, ...] = ("resize", "letterbox", "center_crop")


CAMERA_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "BMP")  # what inspection cameras write (and ingest takes)
MAX_PIXELS = 25_000_000  # the largest image decoded at all (a 25 MP camera), whatever its side range


class ImageRefused(DataError):
    """Image bytes refused before decoding; the message is the reason, and what the header said
    (format, ``(width, height)``, mode) is kept when there was a header to read."""

    def __init__(
        self, reason: str, fmt: str | None = None, size: tuple[int, int] | None = None, mode: str | None = None
    ) -> None:
        super().__init__(reason)
        self.format, self.size, self.mode = fmt, size, mode


@contextmanager
def open_image(
    data: bytes,
    *,
    max_side: int | None = None,
    max_pixels: int = MAX_PIXELS,
    formats: tuple[str, ...] = CAMERA_FORMATS,
) -> Iterator[Image.Image]:
    """The image opened from its header, after every check that needs no pixel: a camera format,
    at most ``max_side`` pixels per side and ``max_pixels`` in all. Pixels are decoded by what the
    caller does with it (``convert``, ``np.asarray``), so only a bounded image is ever decoded.
    Raises :class:`ImageRefused` with the reason (Pillow's own bomb error included)."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageRefused("empty file (0 bytes)")
    try:
        img = Image.open(io.BytesIO(data), formats=list(formats))
    except UnidentifiedImageError:
        raise ImageRefused(_unidentified(data, formats), sniff_format(data)) from None
    except Image.DecompressionBombError as exc:  # over twice Pillow's own limit: name the declared size
        fmt, size, mode = _declared(data, formats)
        what = f"size {size[0]}x{size[1]}" if size else "an image"
        raise ImageRefused(f"{what} refused from its header: {exc}", fmt, size, mode) from None
    except (OSError, ValueError, SyntaxError, struct.error) as exc:  # a corrupt header
        raise ImageRefused(f"does not decode: {exc}") from None
    with img:
        width, height = img.size
        header = (img.format, (width, height), img.mode)
        if width * height > max_pixels:
            raise ImageRefused(f"size {width}x{height} refused from its header: over {max_pixels:,} pixels", *header)
        if max_side is not None and max(width, height) > max_side:
            raise ImageRefused(f"size {width}x{height} refused from its header: over {max_side} px per side", *header)
        yield img


# leading bytes of formats a camera does not send, to name them in a refusal without parsing them
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"RIFF", "WEBP"),  # RIFF....WEBP; other RIFF files are not images anyway
    (b"\x00\x00\x00\x0cjP", "JPEG2000"),
    (b"\xff\x4f\xff\x51", "JPEG2000"),
    (b"%PDF", "PDF"),
    (b"8BPS", "PSD"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"icns", "ICNS"),
    (b"DDS ", "DDS"),
    (b"qoif", "QOI"),
)


def _declared(data: bytes, formats: tuple[str, ...]) -> tuple[str | None, tuple[int, int] | None, str | None]:
    """(format, size, mode) from the header alone, through the format's plugin (which, unlike
    ``Image.open``, does not refuse a bomb: nothing is decoded here either)."""
    from PIL import Image

    Image.init()
    for fmt in formats:
        factory, accept = Image.OPEN[fmt]
        if accept is not None and not accept(data[:16]):
            continue
        try:
            img = factory(io.BytesIO(data), "")
        except Exception:  # the header does not parse as this format: try the next
            continue
        with img:
            return img.format, img.size, img.mode
    return None, None, None


def sniff_format(data: bytes) -> str | None:
    """The format a file's leading bytes name, when it is one a camera does not send."""
    found = next((name for magic, name in _SIGNATURES if data.startswith(magic)), None)
    if found is None and data[4:12] in (b"ftypavif", b"ftypheic", b"ftypheix", b"ftypmif1"):
        found = "AVIF/HEIF"
    return found


def _unidentified(data: bytes, formats: tuple[str, ...]) -> str:
    """Why Pillow did not open ``data`` with the camera formats: another format, or not an image."""
    found = sniff_format(data)
    if found is None or found in formats:
        return "not an image (unidentified format)"
    return f"format {found} is not one a camera sends ({', '.join(formats)})"


def decode_problem(data: bytes, max_side: int | None = None) -> str | None:
    """Why :func:`open_image` would refuse ``data`` (None when it opens)."""
    try:
        with open_image(data, max_side=max_side):
            return None
    except ImageRefused as exc:
        return str(exc)


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
    with open_image(data) as img:
        source = img.size  # before draft(), which changes it
        if img.format == "JPEG":
            img.draft("L", _target(*source, size, transform))
        return grey_model_input(img.convert("L"), size, transform, source_size=source)


def grey_model_input(
    grey: Image.Image, size: int, transform: str = "resize", source_size: tuple[int, int] | None = None
) -> np.ndarray:
    """:func:`model_input` of an image already decoded to grey (at its full size, or drafted from
    ``source_size``): the one transform. A PNG or BMP decoded once for the image checks reuses it;
    a JPEG is decoded by :func:`model_input`, scaled in the DCT as in training."""
    import numpy as np
    from PIL import Image

    tw, th = _target(*(source_size or grey.size), size, transform)
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
