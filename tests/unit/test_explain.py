"""Explanation building blocks: regions, overlays, masks, Grad-CAM mechanics, SHAP additivity."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import numpy as np
import pytest
import torch

from andon.errors import ConfigError
from andon.explain.maps import (
    explanation_key,
    gradcam,
    overlay_png,
    random_mask,
    saliency,
    sensor_shap,
    target_layer,
    top_regions,
)
from andon.models import build_model


def test_top_regions_find_the_hot_cell_and_shares_add_up() -> None:
    sal = np.zeros((128, 128), np.float32)
    sal[96:, :32] = 1.0  # bottom-left cell
    sal[:32, 96:] = 0.5  # top-right cell, half as hot
    top = top_regions(sal, k=3)
    assert top[0] == {"x": 0.0, "y": 0.75, "w": 0.25, "h": 0.25, "share": pytest.approx(2 / 3, abs=1e-3)}
    assert top[1]["x"] == 0.75 and top[1]["y"] == 0.0 and top[2]["share"] == 0.0
    assert sum(t["share"] for t in top_regions(sal, k=16)) == pytest.approx(1.0, abs=1e-3)


def test_explanation_keys_are_dated_and_key_safe() -> None:
    when = datetime(2026, 11, 26, 8, tzinfo=UTC)
    assert explanation_key("plant-a", when, "P-1") == "explanations/plant-a/2026-11-26/P-1.png"
    assert explanation_key("plant-a", when, "../x y", "json") == "explanations/plant-a/2026-11-26/.._x_y.json"


def test_overlay_is_the_part_next_to_its_heatmap() -> None:
    from PIL import Image

    grey = np.full((64, 64), 120, np.uint8)
    sal = np.zeros((64, 64), np.float32)
    sal[:8, :8] = 1
    img = Image.open(io.BytesIO(overlay_png(grey, sal, scale=2)))
    assert img.format == "PNG" and img.size == ((64 * 2 + 4) * 2, 128)
    px = np.asarray(img.convert("RGB"))
    assert tuple(px[2, 2]) == (120, 120, 120)  # the original, untouched
    left, hot = px[2, (64 + 4) * 2 + 2], px[120, (64 + 4) * 2 + 120]
    assert left[0] > left[2] and tuple(hot) != tuple(left)  # hot = red end of the map, cold elsewhere
    with_caption = Image.open(io.BytesIO(overlay_png(grey, sal, caption="P-1 defect 0.97")))
    assert with_caption.height == img.height + 16


def test_random_masks_cover_the_asked_share_in_blocks() -> None:
    m = random_mask(3, 128, 128, count=1638, patch=8, seed=1)
    assert m.shape == (3, 128, 128) and m.dtype == torch.bool
    assert all(abs(int(x.sum()) - 1638) <= 64 for x in m)
    assert not torch.equal(m[0], m[1])
    block = m[0].view(16, 8, 16, 8).permute(0, 2, 1, 3).reshape(256, 64)
    assert set(block.sum(1).tolist()) <= {0, 64}  # whole 8x8 blocks only
    assert int(random_mask(1, 10, 10, 10, patch=1)[0].sum()) == 10


def test_gradcam_points_at_the_spot_a_built_model_reacts_to() -> None:
    """A network whose defect logit is "there is a bright spot somewhere" (a thresholded
    convolution, then global max pooling): Grad-CAM must light up the spot, not the rest."""
    from torch import nn

    class SpotDetector(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3, padding=1)
            self.relu = nn.ReLU()
            with torch.no_grad():
                self.conv.weight.fill_(1 / 9)
                self.conv.bias.fill_(-0.5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = self.relu(self.conv(x)).amax(dim=(1, 2, 3))
            return torch.stack([-s, s], dim=1)

    net = SpotDetector()
    assert target_layer(net) is net.relu
    x = torch.rand(2, 1, 32, 32) * 0.3
    x[0, 0, 4:8, 20:24] = 1.0
    x[1, 0, 25:29, 3:7] = 1.0
    cam = gradcam(net, x, 1)
    assert cam.shape == (2, 32, 32) and cam.max() == pytest.approx(1.0)
    for i, (r, c) in enumerate(((6, 22), (27, 5))):
        peak = np.unravel_index(cam[i].argmax(), cam[i].shape)
        assert abs(peak[0] - r) <= 2 and abs(peak[1] - c) <= 2, (i, peak)
        far = cam[i].copy()
        far[max(0, r - 5) : r + 6, max(0, c - 5) : c + 6] = 0
        assert far.max() < 0.05


def test_gradcam_runs_on_every_image_network_and_refuses_an_mlp() -> None:
    x = torch.randn(2, 1, 64, 64)
    for name in ("small_cnn", "mobilenet_v3_small", "resnet18"):
        net = build_model(name, 1, 2).eval()
        cam = saliency(net, x, 1)
        assert cam.shape == (2, 64, 64) and cam.min() >= 0 and cam.max() <= 1, name
    with pytest.raises(ConfigError, match="no convolution"):
        gradcam(build_model("sensor_mlp", 5, 2), torch.randn(2, 5), 1)
    with pytest.raises(ConfigError, match="unknown explanation method"):
        saliency(build_model("small_cnn", 1, 2), x, 1, method="lime")


def test_sensor_shap_values_add_up_to_the_logit_difference() -> None:
    torch.manual_seed(0)
    net = build_model("sensor_mlp", 8, 3, width=4).eval()
    x = np.random.default_rng(0).normal(size=(5, 8)).astype("float32")
    values = sensor_shap(net, x)
    assert values.shape == (5, 8, 3)
    with torch.no_grad():
        diff = (net(torch.from_numpy(x)) - net(torch.zeros(1, 8))).numpy()
    assert np.allclose(values.sum(axis=1), diff, atol=1e-4)


def test_the_inference_copy_computes_the_same_function() -> None:
    from andon.models import optimize_for_inference

    torch.manual_seed(0)
    x = torch.randn(4, 1, 64, 64)
    for name in ("small_cnn", "mobilenet_v3_small", "resnet18"):
        net = build_model(name, 1, 2)
        net.train()
        with torch.no_grad():  # non-trivial running statistics
            for _ in range(3):
                net(torch.randn(8, 1, 64, 64) * 2 + 0.5)
        net.eval()
        fast = optimize_for_inference(net)
        with torch.no_grad():
            a, b = net(x), fast(x.contiguous(memory_format=torch.channels_last))
            fa, fb = net.features(x), fast.features(x)
        assert torch.allclose(a, b, atol=1e-4), name
        assert torch.allclose(fa, fb, atol=1e-4), name
        if name == "small_cnn":  # every conv-BN pair sits in one Sequential: all folded
            assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
        assert saliency(fast, x, 1).shape == (4, 64, 64)
