"""Held-out evaluation: the numbers a promotion gate compares, and the pictures people look at."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Mean |confidence - accuracy| over equal-width confidence bins, weighted by bin size."""
    import numpy as np

    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in itertools.pairwise(edges):
        mask = (conf > lo) & (conf <= hi)
        if mask.any():
            ece += mask.mean() * abs(conf[mask].mean() - correct[mask].mean())
    return float(ece)


def classification_metrics(
    probs: np.ndarray, labels: np.ndarray, classes: tuple[str, ...], positive: str = "defect"
) -> dict[str, float]:
    """accuracy, defect precision / recall / F1, ROC-AUC, ECE and per-class precision / recall / F1."""
    import numpy as np
    from sklearn.metrics import precision_recall_fscore_support, roc_auc_score

    preds = probs.argmax(axis=1)
    out: dict[str, float] = {"accuracy": float((preds == labels).mean()) if len(labels) else 0.0}
    p, r, f, support = precision_recall_fscore_support(labels, preds, labels=list(range(len(classes))), zero_division=0)
    for i, cls in enumerate(classes):
        out[f"{cls}_precision"], out[f"{cls}_recall"], out[f"{cls}_f1"] = float(p[i]), float(r[i]), float(f[i])
        out[f"{cls}_support"] = float(support[i])
    if positive in classes:
        i = classes.index(positive)
        out["defect_precision"], out["defect_recall"], out["defect_f1"] = float(p[i]), float(r[i]), float(f[i])
    present = np.unique(labels)
    if len(present) > 1:
        if len(classes) == 2:
            out["roc_auc"] = float(roc_auc_score(labels, probs[:, 1]))
        else:
            out["roc_auc"] = float(roc_auc_score(labels, probs, multi_class="ovr", labels=list(range(len(classes)))))
    out["ece"] = expected_calibration_error(probs, labels)
    out["n"] = float(len(labels))
    return out


def confusion_png(labels: np.ndarray, probs: np.ndarray, classes: tuple[str, ...], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.metrics import confusion_matrix

    cm = confusion_matrix(labels, probs.argmax(axis=1), labels=list(range(len(classes))))
    fig, ax = plt.subplots(figsize=(3.2 + 0.5 * len(classes), 3 + 0.5 * len(classes)))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def worst_errors_png(
    images: np.ndarray, labels: np.ndarray, probs: np.ndarray, classes: tuple[str, ...], path: Path, n: int = 16
) -> Path:
    """The ``n`` most confident mistakes (or the least confident hits when there are none)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    true_prob = probs[np.arange(len(labels)), labels]
    order = np.argsort(true_prob)[:n]
    cols = 4
    rows = max(1, int(np.ceil(len(order) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.2, rows * 2.4))
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for ax, i in zip(np.atleast_1d(axes).ravel(), order, strict=False):
        ax.imshow(images[i], cmap="gray", vmin=0, vmax=255)
        pred = int(probs[i].argmax())
        colour = "red" if pred != labels[i] else "green"
        ax.set_title(f"true {classes[labels[i]]}\npred {classes[pred]} {probs[i, pred]:.2f}", fontsize=8, color=colour)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
