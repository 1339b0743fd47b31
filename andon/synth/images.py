"""Grayscale part images with surface defects, rendered procedurally with numpy.

The scene is computed on a coordinate grid, so camera rotation and shift are exact (the grid is
transformed, not the pixels), and every drift knob a real floor has maps to one parameter:
lighting (brightness, gamma, uneven illumination), camera (rotation, shift, focus blur, sensor
noise), material (a new supplier's texture) and geometry (a new SKU).
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Literal

import numpy as np

from andon.config import Camera, Lighting, Sku

DEFECT_TYPES: tuple[str, ...] = ("scratch", "pit", "crack", "inclusion")
Material = Literal["standard", "supplier-b", "cast"]


@dataclass(frozen=True)
class Drift:
    """Changes on the floor, applied on top of the plant's camera and lighting.

    Neutral values (the defaults) leave the plant's images as configured.
    """

    brightness: float = 1.0  # multiplies the lighting gain (0.7 = a lamp dimmed by 30 %)
    gamma: float = 1.0  # multiplies the lighting gamma
    unevenness: float = 0.0  # added to the light gradient strength
    rotation_deg: float = 0.0  # added to the camera mount rotation
    shift_px: tuple[float, float] = (0.0, 0.0)  # added to the camera shift
    blur_sigma: float = 0.0  # added focus blur (Gaussian sigma, pixels)
    noise_std: float = 0.0  # added sensor noise (grey levels)
    material: Material | None = None  # a new supplier's material replaces the plant's

    def __post_init__(self) -> None:
        from andon.errors import ConfigError
        from andon.synth import DRIFT_LIMITS

        for knob, (lo, hi) in DRIFT_LIMITS.items():
            value = getattr(self, knob)
            if not lo <= value <= hi:
                raise ConfigError(f"drift {knob} = {value}: outside [{lo}, {hi}]")

    def is_neutral(self) -> bool:
        return self == Drift()

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Optics:
    """Camera + lighting + drift folded into the numbers the renderer needs."""

    gain: float = 1.0
    gamma: float = 1.0
    unevenness: float = 0.0
    rotation_deg: float = 0.0
    shift_px: tuple[float, float] = (0.0, 0.0)
    blur_sigma: float = 0.0
    noise_std: float = 4.0
    material: Material = "standard"
    extra: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_config(
        cls, camera: Camera, lighting: Lighting, material: Material = "standard", drift: Drift | None = None
    ) -> Optics:
        d = drift or Drift()
        return cls(
            gain=lighting.brightness * d.brightness,
            gamma=lighting.gamma * d.gamma,
            unevenness=min(1.0, lighting.unevenness + d.unevenness),
            rotation_deg=camera.rotation_deg + d.rotation_deg,
            shift_px=(camera.shift_px[0] + d.shift_px[0], camera.shift_px[1] + d.shift_px[1]),
            blur_sigma=camera.focus_blur_sigma + d.blur_sigma,
            noise_std=camera.noise_std + d.noise_std,
            material=d.material or material,
        )


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    ax = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    yy, xx = np.meshgrid(ax, ax, indexing="ij")
    return xx, yy


@lru_cache(maxsize=8)
def _upsampler(size: int, coarse: int) -> np.ndarray:
    """Bilinear interpolation matrix (size x coarse): ``A @ G @ A.T`` upsamples a coarse grid."""
    pos = np.linspace(0, coarse - 1, size, dtype=np.float32)
    lo = np.floor(pos).astype(int).clip(0, coarse - 2)
    frac = pos - lo
    a = np.zeros((size, coarse), dtype=np.float32)
    a[np.arange(size), lo] = 1 - frac
    a[np.arange(size), lo + 1] = frac
    return a


def _smooth_noise(rng: np.random.Generator, size: int, coarse: int) -> np.ndarray:
    a = _upsampler(size, coarse)
    g = rng.standard_normal((coarse, coarse)).astype(np.float32)
    out: np.ndarray = a @ g @ a.T
    return out


def _segment_distance(u: np.ndarray, v: np.ndarray, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    d = p1 - p0
    length2 = float(d @ d) or 1e-9
    t = np.clip(((u - p0[0]) * d[0] + (v - p0[1]) * d[1]) / length2, 0.0, 1.0)
    out: np.ndarray = np.hypot(u - (p0[0] + t * d[0]), v - (p0[1] + t * d[1]))
    return out


def _shape(sku: Sku, u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Part mask (float 0..1, soft edge) and the radius field used by textures."""
    radius = sku.size
    r = np.hypot(u, v)
    edge = 2.5 / 128  # soft edge of ~1 px at 128 px
    if sku.shape == "plate":
        half = radius * 0.85
        m = np.maximum(np.abs(u), np.abs(v) * 1.15)
        mask = np.clip((half - m) / edge, 0, 1)
    else:
        mask = np.clip((radius - r) / edge, 0, 1)
        if sku.shape == "ring":
            mask = mask * np.clip((r - radius * 0.45) / edge, 0, 1)
    # holes: one in the centre, the others on a bolt circle
    hole_r = radius * (0.16 if sku.holes <= 1 else 0.09)
    centres = [(0.0, 0.0)] if sku.holes >= 1 and sku.shape != "ring" else []
    n_ring = sku.holes - len(centres)
    phase = rng.uniform(0, 2 * np.pi)
    for k in range(max(n_ring, 0)):
        a = phase + 2 * np.pi * k / max(n_ring, 1)
        centres.append((0.6 * radius * np.cos(a), 0.6 * radius * np.sin(a)))
    for cx, cy in centres:
        mask = mask * np.clip((np.hypot(u - cx, v - cy) - hole_r) / edge, 0, 1)
    return mask.astype(np.float32), r


def _texture(
    material: Material,
    sku: Sku,
    u: np.ndarray,
    v: np.ndarray,
    r: np.ndarray,
    rng: np.random.Generator,
    size: int,
) -> np.ndarray:
    if material == "cast":
        base = 140 + 14 * _smooth_noise(rng, size, 12) + 9 * rng.standard_normal(u.shape).astype(np.float32)
    elif material == "supplier-b":
        # coarser grain, stronger mottling and wider machining marks than the standard stock
        base = 145 + 20 * _smooth_noise(rng, size, 6) + 6 * np.sin(r * 55 + rng.uniform(0, 6.28))
        base = base + 5 * rng.standard_normal(u.shape).astype(np.float32)
    else:
        base = 160 + 6 * _smooth_noise(rng, size, 8) + 5 * np.sin(r * 140 + rng.uniform(0, 6.28))
    if sku.shape == "impeller":
        phi = np.arctan2(v, u)
        base = base + 18 * np.sin(6 * phi + 4 * r) * (r > sku.size * 0.3)
    return base.astype(np.float32)


def _defect(kind: str, u: np.ndarray, v: np.ndarray, sku: Sku, rng: np.random.Generator, px: float) -> np.ndarray:
    """Additive intensity change of one defect (negative = darker), in grey levels."""
    reach = sku.size * 0.8

    def point() -> np.ndarray:
        a, rad = rng.uniform(0, 2 * np.pi), reach * np.sqrt(rng.uniform(0.1, 1.0))
        return np.array([rad * np.cos(a), rad * np.sin(a)], dtype=np.float32)

    if kind == "scratch":
        p0 = point()
        a = rng.uniform(0, np.pi)
        length = rng.uniform(0.25, 0.6) * sku.size
        p1 = p0 + length * np.array([np.cos(a), np.sin(a)], dtype=np.float32)
        width = rng.uniform(1.0, 1.8) * px
        d = _segment_distance(u, v, p0, p1)
        sign = -1 if rng.uniform() < 0.7 else 1
        out: np.ndarray = sign * rng.uniform(55, 85) * np.clip(1 - d / width, 0, 1)
        return out
    if kind == "pit":
        c = point()
        rad = rng.uniform(2.5, 5.0) * px
        d = np.hypot(u - c[0], v - c[1])
        out = -rng.uniform(70, 110) * np.clip(1 - (d / rad) ** 2, 0, 1)
        return out
    if kind == "crack":
        p = point()
        acc = np.full(u.shape, np.inf, dtype=np.float32)
        a = rng.uniform(0, 2 * np.pi)
        for _ in range(int(rng.integers(5, 9))):
            a += rng.normal(0, 0.6)
            q = p + rng.uniform(0.05, 0.1) * sku.size * np.array([np.cos(a), np.sin(a)], dtype=np.float32)
            acc = np.minimum(acc, _segment_distance(u, v, p, q))
            p = q
        out = -rng.uniform(70, 100) * np.clip(1 - acc / (1.1 * px), 0, 1)
        return out
    if kind == "inclusion":
        c = point()
        rad = rng.uniform(4.0, 8.0) * px
        d = np.hypot(u - c[0], v - c[1]) / rad
        wobble = 1 + 0.35 * np.sin(5 * np.arctan2(v - c[1], u - c[0]) + rng.uniform(0, 6.28))
        sign = 1 if rng.uniform() < 0.5 else -1
        out = sign * rng.uniform(50, 80) * np.clip(1.2 - d * wobble, 0, 1).clip(0, 1)
        return out
    raise ValueError(f"unknown defect type {kind!r}; known: {DEFECT_TYPES}")


MIN_DEFECT_PIXELS = 4  # of the part's own pixels a visible defect changes by more than 10 grey levels
MAX_DEFECT_DRAWS = 50


def render_part(
    seed: int,
    index: int,
    size: int,
    sku: Sku,
    defect: str | None = None,
    optics: Optics | None = None,
) -> np.ndarray:
    """One part image as ``uint8 (size, size)``, a pure function of its arguments."""
    return render_part_with_mask(seed, index, size, sku, defect, optics)[0]


def render_part_with_mask(
    seed: int,
    index: int,
    size: int,
    sku: Sku,
    defect: str | None = None,
    optics: Optics | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The image and a boolean mask of the pixels the defect changed (all False for a good part).

    The defect draws from its own random stream, so the same ``(seed, index)`` without the
    defect is the exact same part without it: a counterfactual for explanation tests.
    """
    from scipy.ndimage import gaussian_filter

    optics = optics or Optics()
    rng = np.random.default_rng([seed, index])
    xx, yy = _grid(size)
    px = 2.0 / size  # one pixel in grid units
    # the part lies on the belt at a random angle and offset; the camera adds its own mount pose
    theta = np.deg2rad(optics.rotation_deg) + rng.uniform(0, 2 * np.pi)
    jitter = rng.normal(0, 0.02, 2)
    sx = optics.shift_px[0] * px + jitter[0]
    sy = optics.shift_px[1] * px + jitter[1]
    c, s = np.cos(theta), np.sin(theta)
    u = (c * (xx - sx) + s * (yy - sy)).astype(np.float32)
    v = (-s * (xx - sx) + c * (yy - sy)).astype(np.float32)

    mask, r = _shape(sku, u, v, rng)
    part = _texture(optics.material, sku, u, v, r, rng, size)
    delta = np.zeros_like(part)
    if defect:
        # a defect drawn into a hole or beside the part would leave a "defective" part that looks
        # perfect (label noise no model can learn): draw again until enough of it lies on the part
        drng = np.random.default_rng([seed, index, 0xDEF])
        for _ in range(MAX_DEFECT_DRAWS):
            delta = _defect(defect, u, v, sku, drng, px).astype(np.float32)
            if int(((np.abs(delta) * mask) > 10).sum()) >= MIN_DEFECT_PIXELS:
                break
        part = part + delta
    background = 28 + 4 * _smooth_noise(rng, size, 4)
    img = background + mask * (part - background)

    # lighting: uneven illumination, gain, gamma
    if optics.unevenness:
        img = img * (1 + optics.unevenness * 0.5 * xx)
    img = np.clip(img * optics.gain, 0, 255)
    if optics.gamma != 1.0:
        img = 255.0 * (img / 255.0) ** optics.gamma
    if optics.blur_sigma > 0:
        img = gaussian_filter(img, optics.blur_sigma, mode="nearest")
    if optics.noise_std > 0:
        img = img + rng.normal(0, optics.noise_std, img.shape).astype(np.float32)
    out: np.ndarray = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    mask_out: np.ndarray = (np.abs(delta) * mask) > 10
    return out, mask_out


def encode_png(img: np.ndarray, mode: str = "L") -> bytes:
    """Lossless PNG, fast compression; ``mode="RGB"`` writes grey content in an RGB container
    (what many industrial cameras and the public casting set do)."""
    from PIL import Image

    buf = io.BytesIO()
    pil = Image.fromarray(img)
    (pil.convert("RGB") if mode == "RGB" else pil).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
