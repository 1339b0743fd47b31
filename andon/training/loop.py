"""The training loop: seeded, deterministic on CPU, AdamW + one-cycle, the checkpoint chosen on
the validation split (never the test split) by the caller's objective (Andon's: the overkill at
the plant's escape target, see ``andon.quality``), early stopping.

Imbalance: defects are rare on a real line, and an all-ok model is 95 % accurate at a 5 % defect
rate. ``training.sampling`` says how the loop keeps defects from being ignored: ``weighted_loss``
(the cross-entropy weighs each class by its inverse frequency), ``balanced`` (each batch draws
the classes equally often, with replacement) or ``none``."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from andon.config import TrainingSpec
    from andon.training.data import ImageSet

# fixed preprocessing: grey uint8 -> float, centred; recorded with every model version
PREPROCESSING = {"grey": True, "scale": 1 / 255.0, "mean": 0.5, "std": 0.25}


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """``uint8 (N, H, W)`` -> ``float32 (N, 1, H, W)`` normalized as ``PREPROCESSING`` says."""
    import torch

    x = torch.from_numpy(images).float().unsqueeze(1)
    return (x * PREPROCESSING["scale"] - PREPROCESSING["mean"]) / PREPROCESSING["std"]


@dataclass
class EpochLog:
    epoch: int
    train_loss: float
    val_loss: float
    val_accuracy: float
    seconds: float
    images_per_s: float
    val_objective: float = float("nan")  # what the checkpoint is chosen by (higher is better)


Objective = Callable[["np.ndarray", "np.ndarray"], float]  # (val probabilities, val labels) -> higher is better


@dataclass
class FitResult:
    best_epoch: int
    best_state: dict[str, Any]
    history: list[EpochLog] = field(default_factory=list)
    stopped_early: bool = False


def seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def predict(model: nn.Module, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Class probabilities ``(N, C)`` in eval mode."""
    import numpy as np
    import torch

    model.eval()
    out = []
    with torch.inference_mode():
        for lo in range(0, len(images), batch_size):
            out.append(torch.softmax(model(to_tensor(images[lo : lo + batch_size])), dim=1).numpy())
    return np.concatenate(out) if out else np.zeros((0, 0))


def epoch_order(labels: np.ndarray, sampling: str, rng: np.random.Generator) -> np.ndarray:
    """The training indices of one epoch: a permutation, or (``balanced``) as many draws with
    replacement where every class is equally likely."""
    import numpy as np

    if sampling != "balanced":
        return rng.permutation(len(labels))
    classes = np.unique(labels)
    per_class = [np.flatnonzero(labels == c) for c in classes]
    which = rng.integers(0, len(classes), size=len(labels))
    return np.array([rng.choice(per_class[w]) for w in which], dtype=np.int64)


def fit(
    model: nn.Module,
    train: ImageSet,
    val: ImageSet,
    spec: TrainingSpec,
    augment: Any,
    on_epoch: Callable[[EpochLog], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
    objective: Objective | None = None,
) -> FitResult:
    """Train ``model`` in place and load the best checkpoint: the highest ``objective`` on ``val``
    (default: accuracy), ties broken by the lower validation loss."""
    import numpy as np
    import torch
    from torch import nn

    seed_everything(spec.seed)
    # convolution weights in channels_last while training: the same function, faster per step for
    # small_cnn at 96 px on this CPU (1.6x on 1 thread, 1.4x on 2: benchmarks/training_speed.py); the
    # model goes back to the default layout afterwards, so what is saved and exported is unchanged
    model.to(memory_format=torch.channels_last)
    rng = np.random.default_rng(spec.seed)
    steps = max(1, int(np.ceil(len(train) / spec.batch_size)))
    opt = torch.optim.AdamW(model.parameters(), lr=spec.learning_rate, weight_decay=spec.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=spec.learning_rate, total_steps=steps * spec.epochs)
    weights = None
    if spec.sampling == "weighted_loss":  # each class weighs as much as the others in the loss
        counts = np.bincount(train.labels, minlength=int(train.labels.max()) + 1).astype(float)
        weights = torch.tensor(counts.sum() / np.maximum(counts, 1) / len(counts), dtype=torch.float32)
    loss_fn = nn.CrossEntropyLoss(weight=weights)
    best = (float("-inf"), float("-inf"))
    result = FitResult(best_epoch=0, best_state=copy.deepcopy(model.state_dict()))
    patience = 0
    min_epochs = int(np.ceil(spec.epochs * 0.8))
    for epoch in range(1, spec.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        order = epoch_order(train.labels, spec.sampling, rng)
        total = 0.0
        for b in range(steps):
            idx = order[b * spec.batch_size : (b + 1) * spec.batch_size]
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            batch = np.stack([augment(image=train.images[i][..., None])["image"][..., 0] for i in idx])
            x = to_tensor(batch)
            y = torch.from_numpy(train.labels[idx])
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            if on_batch:
                on_batch(len(idx))
        seconds = time.perf_counter() - t0
        probs = predict(model, val.images)
        val_loss = float(
            nn.functional.nll_loss(torch.log(torch.from_numpy(probs).clamp_min(1e-8)), torch.from_numpy(val.labels))
        )
        val_acc = float((probs.argmax(1) == val.labels).mean())
        score = objective(probs, val.labels) if objective else val_acc
        log = EpochLog(epoch, total / len(train), val_loss, val_acc, seconds, len(train) / seconds, score)
        result.history.append(log)
        if on_epoch:
            on_epoch(log)
        if (score, -val_loss) > best:
            best = (score, -val_loss)
            result.best_epoch = epoch
            result.best_state = copy.deepcopy(model.state_dict())
            patience = 0
        else:
            patience += 1
            # the one-cycle schedule peaks at 30 % and the validation score swings until the rate
            # has annealed (BatchNorm statistics): stop early only in the last 20 % of the epochs
            if patience >= spec.early_stopping_patience and epoch >= min_epochs:
                result.stopped_early = True
                break
    model.load_state_dict(result.best_state)
    model.to(memory_format=torch.contiguous_format)
    return result
