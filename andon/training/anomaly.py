"""Anomaly models for plants with few or no defect labels, and for defect types never seen:
PatchCore-style, fitted on good parts only.

1. **Backbone**: an image network's feature maps at the recipe's strides (``anomaly.strides``: 4 and
   8 for thin cracks and pits, 32 for the whole part's structure; ``andon.models.mid_features``). No
   pretrained weights can be downloaded, so the backbone is the fleet's central model
   (``central``), the plant's own classifier trained in the same run (``kind: both``), a weights
   file from the object store checked against its sha256 (``file``), or a freshly initialised
   network (``random``: the baseline the others are measured against, ``benchmarks/defects.py``).
2. **Memory bank**: the patch features of up to ``max_train_images`` good parts, subsampled by a
   greedy k-center coreset (on a random projection, as PatchCore does) to ``memory_size`` patches
   that still cover every kind of normal patch.
3. **Threshold**: set on the validation split's good parts so that at most the plant's overkill
   budget of them is rejected; a part is scored by its most unusual patch, and the patch
   distances are its explanation (the anomaly map).

Example (shapes only):
    >>> import numpy as np
    >>> from andon.models import build_model
    >>> net = build_model("small_cnn", 1, 2, 8)
    >>> good = np.random.default_rng(0).integers(90, 110, (6, 64, 64), dtype=np.uint8)
    >>> pc = fit_patchcore(net, good, memory_size=50, pool_size=500)
    >>> tuple(pc.memory.shape)
    (50, 48)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from andon.errors import DataError

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn


def patch_features(model: Any, images: np.ndarray, batch_size: int = 32) -> torch.Tensor:
    """``(N, D, h, w)`` patch features of ``uint8 (N, H, W)`` images through ``model``'s backbone."""
    import torch

    from andon.training.loop import to_tensor

    out = []
    with torch.inference_mode():
        for lo in range(0, len(images), batch_size):
            out.append(model.patch_features(to_tensor(images[lo : lo + batch_size])))
    return torch.cat(out)


def greedy_coreset(points: torch.Tensor, size: int, seed: int = 0, projection: int = 32) -> torch.Tensor:
    """Indices of ``size`` rows of ``points`` chosen by greedy k-center (each new point the one
    farthest from those chosen), on a random projection to ``projection`` dimensions."""
    import torch

    n = len(points)
    if size >= n:
        return torch.arange(n)
    gen = torch.Generator().manual_seed(seed)
    if points.shape[1] > projection:
        proj = torch.randn(points.shape[1], projection, generator=gen) / projection**0.5
        points = points @ proj
    chosen = torch.empty(size, dtype=torch.long)
    chosen[0] = int(torch.randint(n, (1,), generator=gen))
    dist = ((points - points[chosen[0]]) ** 2).sum(1)
    for i in range(1, size):
        chosen[i] = int(dist.argmax())
        dist = torch.minimum(dist, ((points - points[chosen[i]]) ** 2).sum(1))
    return chosen


def fit_patchcore(
    backbone: nn.Module,
    good: np.ndarray,
    *,
    memory_size: int = 4000,
    pool_size: int = 40_000,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    strides: tuple[int, ...] = (4, 8),
) -> Any:
    """A PatchCore model over ``backbone`` whose memory bank covers the patches of ``good`` parts
    (``uint8 (N, H, W)``). Not yet calibrated: see :func:`calibrate`."""
    import torch

    from andon.models import patchcore_model

    if len(good) == 0:
        raise DataError("an anomaly model needs good parts to learn what normal looks like; the split has none")
    t0 = time.perf_counter()
    probe = patchcore_model(backbone, 1, 1, strides)
    feats = patch_features(probe, good)  # (N, D, h, w)
    d = feats.shape[1]
    flat = feats.permute(0, 2, 3, 1).reshape(-1, d)
    gen = torch.Generator().manual_seed(seed)
    if len(flat) > pool_size:
        flat = flat[torch.randperm(len(flat), generator=gen)[:pool_size]]
    idx = greedy_coreset(flat, min(memory_size, len(flat)), seed)
    model = patchcore_model(backbone, d, len(idx), strides)
    model.memory.copy_(flat[idx])
    if progress:
        took = time.perf_counter() - t0
        progress(f"memory bank: {len(idx)} of {len(flat)} patches of {len(good)} good parts ({took:.1f} s)")
    return model


def anomaly_scores(model: Any, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """``(N,)`` raw anomaly scores (distance of the most unusual patch)."""
    import numpy as np
    import torch

    from andon.training.loop import to_tensor

    out = []
    with torch.inference_mode():
        for lo in range(0, len(images), batch_size):
            out.append(model.score(to_tensor(images[lo : lo + batch_size])).numpy())
    return np.concatenate(out) if out else np.zeros(0)


def calibrate(model: Any, good_scores: np.ndarray, overkill_budget: float) -> dict[str, Any]:
    """Put the model's threshold where at most ``overkill_budget`` of ``good_scores`` (good parts it
    was not fitted on) lie at or above it; the scale is their spread, so the model's defect
    probability is 0.5 exactly at the threshold."""
    import numpy as np

    if len(good_scores) == 0:
        raise DataError("the validation split has no good parts to set the anomaly threshold on")
    ordered = np.sort(good_scores)
    allowed = int(np.floor(overkill_budget * len(ordered)))  # good parts that may score at or above
    threshold = float(ordered[-allowed - 1] if allowed < len(ordered) else ordered[0])
    # strictly above the last good part kept, in the model's own float32 (a float64 step would round away)
    threshold = float(np.nextafter(np.float32(threshold), np.float32(np.inf)))
    scale = float(max(np.std(ordered), 1e-6))
    model.center.fill_(threshold)
    model.scale.fill_(scale)
    return {"raw_threshold": threshold, "scale": scale, "good_parts": len(ordered), "budget": overkill_budget}
