"""Networks by name: plain ``nn.Module`` builders, no training code and no tracking here.

Example:
    >>> from andon.models import build_model
    >>> net = build_model("small_cnn", in_channels=1, num_classes=2, width=16)
    >>> sum(p.numel() for p in net.parameters()) > 0
    True

Every image network exposes ``features(x)`` (the penultimate layer, used for embeddings and
drift features) and ``forward(x)`` (logits). torchvision networks are built with
``weights=None`` (nothing is downloaded) and their first convolution is swapped for one that
takes ``in_channels`` (grayscale parts).
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from andon.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import nn

IMAGE_MODELS = ("small_cnn", "mobilenet_v3_small", "resnet18")
TABULAR_MODELS = ("sensor_mlp",)
ANOMALY_MODELS = ("patchcore", "either")  # good parts' patch memory over an image network; with a classifier


def _small_cnn(in_channels: int, num_classes: int, width: int) -> nn.Module:
    import torch
    from torch import nn

    class SmallCNN(nn.Module):
        """Five conv-BN-ReLU-maxpool blocks (width .. 8*width channels), global pooling, linear."""

        def __init__(self) -> None:
            super().__init__()
            chans = [in_channels, width, width * 2, width * 4, width * 8, width * 8]
            blocks: list[nn.Module] = []
            for a, b in itertools.pairwise(chans):
                blocks += [nn.Conv2d(a, b, 3, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU(inplace=True)]
                blocks.append(nn.MaxPool2d(2))
            self.body = nn.Sequential(*blocks)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.head = nn.Linear(chans[-1], num_classes)

        def features(self, x: torch.Tensor) -> torch.Tensor:
            return torch.flatten(self.pool(self.body(x)), 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.features(x))

    return SmallCNN()


def _torchvision(name: str, in_channels: int, num_classes: int) -> nn.Module:
    import torch
    import torchvision
    from torch import nn

    net = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
    if name == "resnet18":
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)

        def features(x: torch.Tensor) -> torch.Tensor:
            for layer in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool"):
                x = getattr(net, layer)(x)
            return torch.flatten(x, 1)

        head = net.fc
    else:  # mobilenet_v3_small
        first = net.features[0][0]
        net.features[0][0] = nn.Conv2d(
            in_channels, first.out_channels, first.kernel_size, first.stride, first.padding, bias=False
        )

        def features(x: torch.Tensor) -> torch.Tensor:
            x = torch.flatten(net.avgpool(net.features(x)), 1)
            return net.classifier[:-1](x)

        head = net.classifier[-1]

    class Wrapped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net
            self.head = head

        def features(self, x: torch.Tensor) -> torch.Tensor:
            return features(x)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

    return Wrapped()


def _sensor_mlp(in_features: int, num_outputs: int, width: int) -> nn.Module:
    from torch import nn

    class SensorMLP(nn.Module):
        """Standardized features -> two hidden layers -> one logit per output (multi-label)."""

        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Linear(in_features, width * 4), nn.ReLU(), nn.Linear(width * 4, width * 4), nn.ReLU()
            )
            self.head = nn.Linear(width * 4, num_outputs)

        def features(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.body(x))

    return SensorMLP()


def mid_features(net: nn.Module, x: torch.Tensor, strides: tuple[int, ...] = (4, 8)) -> list[torch.Tensor]:
    """Feature maps of an image network at the given ``strides`` of the input (4 and 8: local texture,
    for thin cracks and pits; 32: the whole part's structure, for castings), what an anomaly model
    compares patch by patch. Computed by running the layers in order (no hooks, so concurrent
    callers never see each other's activations)."""
    from torch import nn

    body = getattr(net, "body", None)
    if isinstance(body, nn.Sequential):  # small_cnn: conv-BN-ReLU-pool blocks, stride 2 per pool
        out, stride = [], 1
        for m in body:
            x = m(x)
            if isinstance(m, nn.MaxPool2d):
                stride *= 2
                if stride in strides:
                    out.append(x)
                if stride == max(strides):
                    return out
    inner = getattr(net, "net", None)
    if inner is not None and hasattr(inner, "layer4"):  # resnet18: layer1..4 at strides 4..32
        x = inner.maxpool(inner.relu(inner.bn1(inner.conv1(x))))
        out = []
        for stride, layer in ((4, inner.layer1), (8, inner.layer2), (16, inner.layer3), (32, inner.layer4)):
            x = layer(x)
            if stride in strides:
                out.append(x)
            if stride == max(strides):
                return out
    raise ConfigError(
        f"{type(net).__name__}: no feature maps at strides {list(strides)} for an anomaly model "
        "(small_cnn: 2-32, resnet18: 4-32)"
    )


def nearest(points: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """Each row's Euclidean distance to its nearest row of ``bank`` (one matrix product, not cdist's
    loop: ``|a - b|^2 = |a|^2 - 2 a.b + |b|^2``)."""
    d2 = (points * points).sum(1, keepdim=True) - 2 * points @ bank.T + (bank * bank).sum(1)[None]
    return d2.min(dim=1).values.clamp_min(0).sqrt()


def patchcore_model(backbone: nn.Module, feat_dim: int, memory_size: int, strides: tuple[int, ...] = (4, 8)) -> Any:
    import torch
    import torch.nn.functional as F
    from torch import nn

    class PatchCore(nn.Module):
        """A part is as anomalous as its most unusual patch is far from every patch of the good
        parts it was fitted on (the memory bank). Patch features are the backbone's feature maps at
        ``strides``, averaged over a 3x3 neighbourhood, the coarser one upsampled to the finer.
        ``forward`` gives two-class logits ``[0, (score - center) / scale]``: softmax yields a
        defect probability of 0.5 exactly at the threshold fitted on good parts, so scoring,
        monitoring and the gate treat it like any classifier."""

        memory: torch.Tensor
        center: torch.Tensor
        scale: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            self.backbone = backbone.eval()
            for p in self.backbone.parameters():
                p.requires_grad_(False)
            self.register_buffer("memory", torch.zeros(memory_size, feat_dim))
            self.register_buffer("center", torch.zeros(()))
            self.register_buffer("scale", torch.ones(()))

        def train(self, mode: bool = True) -> PatchCore:  # the backbone's BatchNorm stays frozen
            super().train(mode)
            self.backbone.eval()
            return self

        def patch_features(self, x: torch.Tensor) -> torch.Tensor:
            """``(N, D, h, w)`` at the finer tap's resolution."""
            got = mid_features(self.backbone, x, strides)
            fine = F.avg_pool2d(got[0], 3, 1, 1)
            coarse = [F.interpolate(F.avg_pool2d(g, 3, 1, 1), size=fine.shape[-2:], mode="bilinear") for g in got[1:]]
            return torch.cat([fine, *coarse], dim=1)

        def patch_scores(self, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
            """``(N, h, w)``: each patch's distance to its nearest neighbour in the memory bank."""
            f = self.patch_features(x)
            n, d, h, w = f.shape
            flat = f.permute(0, 2, 3, 1).reshape(-1, d)
            if torch.onnx.is_in_onnx_export():  # a traced loop would fix the chunk count to the example's
                chunk = flat.shape[0]
            dists = [nearest(flat[i : i + chunk], self.memory) for i in range(0, len(flat), chunk)]
            return torch.cat(dists).view(n, h, w)

        def score(self, x: torch.Tensor) -> torch.Tensor:
            """``(N,)`` the anomaly score: the most unusual patch."""
            return self.patch_scores(x).flatten(1).max(dim=1).values

        def anomaly_map(self, x: torch.Tensor) -> torch.Tensor:
            """``(N, H, W)`` patch distances at the input's size: the explanation of the score."""
            scores = self.patch_scores(x)[:, None]
            return F.interpolate(scores, size=x.shape[-2:], mode="bilinear")[:, 0]

        def features(self, x: torch.Tensor) -> torch.Tensor:
            """``(N, D)`` mean patch feature (drift embeddings)."""
            return self.patch_features(x).mean(dim=(2, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            z = (self.score(x) - self.center) / self.scale
            return torch.stack([torch.zeros_like(z), z], dim=1)

    return PatchCore()


def either_model(classifier: nn.Module, anomaly: nn.Module) -> Any:
    import torch
    from torch import nn

    class Either(nn.Module):
        """A classifier and an anomaly model decided as one: a part is rejected when either
        rejects. Both defect logits are put on one scale (0 at the anomaly model's fitted
        threshold, the classifier's own log-odds), and the larger one decides, so the version has
        one defect score and one operating point like any other."""

        def __init__(self) -> None:
            super().__init__()
            self.classifier = classifier
            self.anomaly = anomaly

        def features(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = getattr(self.classifier, "features")(x)  # noqa: B009 (Andon's image networks)
            return out

        def anomaly_map(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = getattr(self.anomaly, "anomaly_map")(x)  # noqa: B009
            return out

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = self.classifier(x)
            z = torch.maximum(logits[:, 1] - logits[:, 0], self.anomaly(x)[:, 1])
            return torch.stack([torch.zeros_like(z), z], dim=1)

    return Either()


def build_from_arch(arch: dict[str, Any]) -> nn.Module:
    """The network an ``architecture.json`` describes (its weights are loaded separately)."""
    name = arch["name"]
    base = (arch["in_channels"], arch["num_classes"], arch["width"])
    if name in ("patchcore", "either"):
        backbone = build_model(str(arch["backbone"]), *base)
        strides = tuple(int(v) for v in arch.get("strides", (4, 8)))
        anomaly = patchcore_model(backbone, int(arch["feat_dim"]), int(arch["memory_size"]), strides)
        return anomaly if name == "patchcore" else either_model(backbone, anomaly)
    return build_model(name, *base)


def build_model(name: str, in_channels: int, num_classes: int, width: int = 16, **extra: Any) -> nn.Module:
    """The network ``name`` (see ``IMAGE_MODELS`` and ``TABULAR_MODELS``), freshly initialized; an
    anomaly model is built from its ``architecture.json`` (:func:`build_from_arch`)."""
    if name == "small_cnn":
        return _small_cnn(in_channels, num_classes, width)
    if name in ("mobilenet_v3_small", "resnet18"):
        return _torchvision(name, in_channels, num_classes)
    if name == "sensor_mlp":
        return _sensor_mlp(in_channels, num_classes, width)
    raise ConfigError(f"unknown model {name!r}; known: {', '.join(IMAGE_MODELS + TABULAR_MODELS + ANOMALY_MODELS)}")


def optimize_for_inference(model: nn.Module) -> nn.Module:
    """A copy of an eval-mode image network that computes the same function faster on a CPU:
    every convolution followed by batch norm inside a ``Sequential`` is folded into one
    convolution, and the weights are in ``channels_last`` (feed it ``channels_last`` inputs).
    About 2x for small_cnn at 128 px on 2 cores (``benchmarks/scoring.py``). Gradients still flow,
    so explanations can use the copy too."""
    import copy

    import torch
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fast = copy.deepcopy(model).eval()
    for module in fast.modules():
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for a, b in itertools.pairwise(names):
            conv, bn = module._modules[a], module._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                module._modules[a] = fuse_conv_bn_eval(conv, bn)
                module._modules[b] = nn.Identity()
    return fast.to(memory_format=torch.channels_last)
