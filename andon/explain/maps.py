"""Explanations logged with predictions: saliency maps for vision models, SHAP values for the
sensor model, and the faithfulness check that tells a real saliency map from a pretty one.

Vision uses **input x gradient** by default: the defect logit's gradient with respect to each
pixel, times the pixel (centred), in absolute value. One forward and one backward pass per
mini-batch, a few milliseconds per part on a CPU core. It was chosen by measurement
(``benchmarks/explain.py``, casting parts, same model, same run): blurring its top 10 % pixels
drops the defect probability by about 0.5, against about 0.01 for Grad-CAM (whose 8x8 grid is
too coarse for casting defects, which the network reads from fine texture) and about 0.23 for
SHAP's ``GradientExplainer`` with 50 samples at 1.1 s per part. Input x gradient is the
one-sample limit of SHAP's expected gradients and exact SHAP for a linear model. ``gradcam``
(region-level, smooth) and ``shap`` stay available per plant (``recipe.explain.method``).

Saliency maps are ``float32 (N, H, W)`` in ``[0, 1]`` at the model's input size. What gets
logged per decision: a PNG (original | heatmap overlay) at
``explanations/<plant>/<date>/<part-id>/<model>-v<version>-<scored-at>.png`` (written once, never
replaced by a later decision on the same part) and the top regions as numbers (cells of a 4x4
grid, as fractions of the image, with their share of the total saliency), so an auditor can read
"the bottom-left quarter, 41 %" without the image.

Example:
    >>> import numpy as np
    >>> sal = np.zeros((1, 8, 8), np.float32); sal[0, 6:, :2] = 1.0
    >>> top_regions(sal[0], k=1)[0]["share"]
    1.0
"""

from __future__ import annotations

import io
import re
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from andon.errors import ConfigError
from andon.storage import join_key

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

Method = Literal["input_gradient", "gradcam", "shap", "anomaly_map"]
METHODS: tuple[str, ...] = ("input_gradient", "gradcam", "shap", "anomaly_map")
GRID = 4


def explanation_key(
    plant: str,
    when: datetime,
    part_id: str,
    suffix: str = "png",
    *,
    model: str | None = None,
    version: int | None = None,
) -> str:
    """Where the explanation of one decision lives. With the deciding ``model`` and ``version``
    (every vision overlay): ``explanations/<plant>/<date>/<part-id>/<model>-v<version>-<scored-at>.<suffix>``,
    so re-scoring a part with another version (or again) never replaces the evidence of an earlier
    decision. Without: ``explanations/<plant>/<date>/<part-id>.<suffix>``. Names are made key-safe."""
    day = f"{when:%Y-%m-%d}"
    if model is None:
        return join_key(
            "explanations", plant, day, f"{re.sub(r'[^A-Za-z0-9._-]', '_', part_id)[:200] or 'part'}.{suffix}"
        )
    safe = _key_safe(part_id) or "part"
    stamp = f"{when.astimezone(UTC):%Y%m%dT%H%M%S%fZ}" if when.tzinfo else f"{when:%Y%m%dT%H%M%S%f}"
    return join_key("explanations", plant, day, safe, f"{_key_safe(model) or 'model'}-v{version}-{stamp}.{suffix}")


def _key_safe(name: str) -> str:
    """A key segment: letters, digits, ``._-``, never ``.``/``..`` (a leading dot becomes ``_``)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:200]
    return "_" + safe[1:] if safe.startswith(".") else safe


def target_layer(model: nn.Module) -> nn.Module:
    """The module whose output Grad-CAM weighs: the activation after the last convolution (the
    convolution itself when no activation follows it)."""
    from torch import nn

    modules = list(model.modules())
    convs = [i for i, m in enumerate(modules) if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ConfigError(f"{type(model).__name__} has no convolution: Grad-CAM needs an image network")
    last = convs[-1]
    for m in modules[last + 1 : last + 4]:
        if isinstance(m, nn.ReLU | nn.ReLU6 | nn.Hardswish | nn.SiLU):
            return m
    return modules[last]


def _target_score(logits: torch.Tensor, target: int | list[int]) -> torch.Tensor:
    """Sum over rows of the logit of each row's target class (one class, or one per row)."""
    import torch

    idx = torch.as_tensor([target] * len(logits) if isinstance(target, int) else target)
    return logits.gather(1, idx.view(-1, 1)).sum()


def _normalize(maps: torch.Tensor) -> np.ndarray:
    flat = maps.flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    out = ((flat - lo) / (hi - lo).clamp_min(1e-12)).view_as(maps)
    return out.detach().numpy().astype("float32")


def gradcam(model: nn.Module, x: torch.Tensor, target: int | list[int]) -> np.ndarray:
    """Grad-CAM maps ``(N, H, W)`` in ``[0, 1]`` for class ``target`` (one per row if a list)."""
    import torch
    import torch.nn.functional as F

    layer = target_layer(model)
    captured: dict[str, torch.Tensor] = {}
    owner = threading.get_ident()

    def hook(_m: nn.Module, _i: Any, out: torch.Tensor) -> None:
        # the model may be serving other threads meanwhile: keep only this thread's activations
        if threading.get_ident() == owner:
            captured["a"] = out

    handle = layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            (grads,) = torch.autograd.grad(_target_score(model(x), target), captured["a"])
        acts = captured["a"].detach()
    finally:
        handle.remove()
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * acts).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return _normalize(cam[:, 0])


def input_gradient(model: nn.Module, x: torch.Tensor, target: int | list[int]) -> np.ndarray:
    """``|x * d logit_target / dx|`` summed over channels: ``(N, H, W)`` in ``[0, 1]``."""
    import torch

    xg = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (grads,) = torch.autograd.grad(_target_score(model(xg), target), xg)
    return _normalize((grads * x).abs().sum(dim=1))


def gradient_shap(
    model: nn.Module, x: torch.Tensor, background: torch.Tensor, target: int, samples: int = 50
) -> np.ndarray:
    """SHAP ``GradientExplainer`` maps for class ``target``: absolute attributions, ``(N, H, W)``
    in ``[0, 1]``. ``background`` is a handful of reference inputs (e.g. passes)."""
    import shap
    import torch

    explainer = shap.GradientExplainer(model, background)
    values = explainer.shap_values(x, nsamples=samples)  # (N, C, H, W, outputs)
    arr = torch.as_tensor(values[..., target]).abs().sum(dim=1)
    return _normalize(arr)


def anomaly_map(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """An anomaly model's own explanation: each pixel's patch distance to the nearest patch of a
    good part, ``(N, H, W)`` in ``[0, 1]`` per image."""
    import torch

    with torch.inference_mode():
        return _normalize(getattr(model, "anomaly_map")(x))  # noqa: B009 (PatchCore and Either have it)


def method_for(model: nn.Module, configured: str) -> str:
    """Anomaly models explain themselves by their anomaly map; classifiers by the recipe's method."""
    return "anomaly_map" if hasattr(model, "anomaly_map") else configured


def saliency(
    model: nn.Module,
    x: torch.Tensor,
    target: int,
    method: str = "input_gradient",
    background: torch.Tensor | None = None,
) -> np.ndarray:
    if method == "anomaly_map":
        return anomaly_map(model, x)
    if method == "input_gradient":
        return input_gradient(model, x, target)
    if method == "gradcam":
        return gradcam(model, x, target)
    if method == "shap":
        if background is None:
            import torch

            background = torch.zeros((4, *x.shape[1:]))
        return gradient_shap(model, x, background, target)
    raise ConfigError(f"unknown explanation method {method!r}; known: {', '.join(METHODS)}")


def top_regions(sal: np.ndarray, k: int = 3, grid: int = GRID) -> list[dict[str, float]]:
    """The ``k`` cells of a ``grid x grid`` split holding the most saliency: ``x, y, w, h`` as
    fractions of the image and ``share`` of the total."""
    import numpy as np

    h, w = sal.shape
    ys, xs = np.linspace(0, h, grid + 1).astype(int), np.linspace(0, w, grid + 1).astype(int)
    cells = []
    for r in range(grid):
        for c in range(grid):
            cells.append((float(sal[ys[r] : ys[r + 1], xs[c] : xs[c + 1]].sum()), r, c))
    total = sum(v for v, _, _ in cells) or 1.0
    out = []
    for v, r, c in sorted(cells, reverse=True)[:k]:
        out.append(
            {
                "x": round(xs[c] / w, 4),
                "y": round(ys[r] / h, 4),
                "w": round((xs[c + 1] - xs[c]) / w, 4),
                "h": round((ys[r + 1] - ys[r]) / h, 4),
                "share": round(v / total, 4),
            }
        )
    return out


def _heat(v: np.ndarray) -> np.ndarray:
    """A jet-like colour map: ``(H, W)`` in [0, 1] -> ``uint8 (H, W, 3)``."""
    import numpy as np

    rgb = np.stack([np.clip(1.5 - np.abs(4 * v - k), 0, 1) for k in (3, 2, 1)], axis=-1)
    return (rgb * 255).astype(np.uint8)


def overlay_png(grey: np.ndarray, sal: np.ndarray, scale: int = 2, caption: str = "") -> bytes:
    """PNG of the part next to its saliency overlay: ``[original | heatmap over original]``.
    Pixel-level maps are smoothed for the eye (the logged numbers use the raw map)."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    smooth = Image.fromarray((sal * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(2))
    sal = np.asarray(smooth, dtype=np.float32)
    sal = sal / max(float(sal.max()), 1e-6)

    g = np.repeat(grey[..., None].astype(np.float32), 3, axis=-1)
    alpha = (0.25 + 0.5 * sal)[..., None]
    over = (g * (1 - alpha) + _heat(sal).astype(np.float32) * alpha).clip(0, 255).astype(np.uint8)
    pair = np.concatenate([g.astype(np.uint8), np.full((grey.shape[0], 4, 3), 255, np.uint8), over], axis=1)
    img = Image.fromarray(pair).resize((pair.shape[1] * scale, pair.shape[0] * scale), Image.Resampling.NEAREST)
    if caption:
        canvas = Image.new("RGB", (img.width, img.height + 16), "white")
        canvas.paste(img, (0, 16))
        ImageDraw.Draw(canvas).text((4, 2), caption[:120], fill="black")
        img = canvas
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def delete_pixels(x: torch.Tensor, mask: torch.Tensor, sigma: float = 4.0) -> torch.Tensor:
    """``x`` with the pixels under ``mask`` (N, H, W bool) replaced by a strongly blurred copy."""
    import torch
    import torchvision.transforms.functional as TF

    k = int(sigma * 3) * 2 + 1
    blurred = TF.gaussian_blur(x, [k, k], [sigma, sigma])
    return torch.where(mask.unsqueeze(1), blurred, x)


def random_mask(n: int, h: int, w: int, count: int, patch: int, seed: int = 0) -> torch.Tensor:
    """``(n, h, w)`` bool masks of ``count`` pixels each: random ``patch x patch`` blocks
    (``patch=1``: scattered single pixels)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    gh, gw = -(-h // patch), -(-w // patch)
    cells = max(1, round(count / (patch * patch)))
    masks = torch.zeros((n, gh * gw), dtype=torch.bool)
    for i in range(n):
        masks[i, torch.randperm(gh * gw, generator=gen)[:cells]] = True
    full = masks.view(n, gh, gw).repeat_interleave(patch, 1).repeat_interleave(patch, 2)
    return full[:, :h, :w]


def deletion_drops(
    model: nn.Module,
    x: torch.Tensor,
    sal: np.ndarray,
    target: int,
    fraction: float = 0.1,
    patch: int = 8,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The drop of P(target) when the top ``fraction`` of saliency pixels are blurred away, and
    when the same share of random pixels is: ``(top_drops, random_drops)``, one per image.

    The random pixels come in ``patch x patch`` blocks by default, because the top pixels of a
    saliency map are contiguous blobs: blurring scattered single pixels (``patch=1``) changes
    the texture of the whole part, a different intervention (``benchmarks/explain.py`` reports
    both)."""
    import numpy as np
    import torch

    n, h, w = sal.shape
    count = max(1, round(fraction * h * w))
    flat = torch.from_numpy(sal).flatten(1)
    top = torch.zeros_like(flat, dtype=torch.bool)
    top.scatter_(1, flat.topk(count, dim=1).indices, True)
    rand = random_mask(n, h, w, count, patch, seed)
    with torch.inference_mode():
        p0 = torch.softmax(model(x), 1)[:, target]
        p_top = torch.softmax(model(delete_pixels(x, top.view(n, h, w))), 1)[:, target]
        p_rand = torch.softmax(model(delete_pixels(x, rand)), 1)[:, target]
    return np.asarray(p0 - p_top), np.asarray(p0 - p_rand)


def sensor_shap(model: nn.Module, x: np.ndarray, background: np.ndarray | None = None) -> np.ndarray:
    """SHAP values ``(N, features, outputs)`` of the sensor MLP's logits (``DeepExplainer``;
    the background defaults to the training mean, which is zero in standardized units, so the
    values of a row add up to its logit minus the logit of an average machine)."""
    import numpy as np
    import shap
    import torch

    bg = torch.zeros((1, x.shape[1])) if background is None else torch.from_numpy(background.astype("float32"))
    explainer = shap.DeepExplainer(model, bg)
    values = explainer.shap_values(torch.from_numpy(x.astype("float32")), check_additivity=True)
    return np.asarray(values, dtype="float32").reshape(len(x), x.shape[1], -1)
