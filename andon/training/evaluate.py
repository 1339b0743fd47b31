"""Held-out evaluation: the numbers a promotion gate compares, and the pictures people look at."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import TYPE_CHECKING

from andon.quality import DEFAULT_CONFIDENCE, decide, defect_scores, rates_at

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


def quality_metrics(
    scores: np.ndarray, labels: np.ndarray, threshold: float, confidence: float = DEFAULT_CONFIDENCE
) -> dict[str, float]:
    """Escape and overkill rates (with upper bounds) at ``threshold``, and the threshold-free
    ROC-AUC of the defect score: the numbers any model kind is judged by first."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    is_defect = np.asarray(labels) != 0
    out = rates_at(scores, is_defect, threshold, confidence).metrics()
    out["threshold"] = float(threshold)
    if 0 < is_defect.sum() < len(is_defect):
        out["roc_auc"] = float(roc_auc_score(is_defect, scores))
    out["n"] = float(len(is_defect))
    return out


def classification_metrics(
    probs: np.ndarray,
    labels: np.ndarray,
    classes: tuple[str, ...],
    threshold: float,
    confidence: float = DEFAULT_CONFIDENCE,
) -> dict[str, float]:
    """Escape / overkill at the operating point ``threshold`` first (``quality_metrics``), then
    accuracy, defect precision / recall / F1 and per-class numbers of the same decisions, and ECE."""
    import numpy as np
    from sklearn.metrics import precision_recall_fscore_support

    out = quality_metrics(defect_scores(probs), labels, threshold, confidence)
    index = {c: i for i, c in enumerate(classes)}
    preds = np.array([index[c] for c in decide(probs, threshold, classes)], dtype=np.int64)
    out["accuracy"] = float((preds == labels).mean()) if len(labels) else 0.0
    p, r, f, support = precision_recall_fscore_support(labels, preds, labels=list(range(len(classes))), zero_division=0)
    for i, cls in enumerate(classes):
        out[f"{cls}_precision"], out[f"{cls}_recall"], out[f"{cls}_f1"] = float(p[i]), float(r[i]), float(f[i])
        out[f"{cls}_support"] = float(support[i])
    # "defect" is any class but the pass class: recall = 1 - escape rate, precision of the rejects
    rejected, defect = preds != 0, labels != 0
    tp = int((rejected & defect).sum())
    out["defect_recall"] = tp / int(defect.sum()) if defect.any() else 0.0
    out["defect_precision"] = tp / int(rejected.sum()) if rejected.any() else 0.0
    pr, rc = out["defect_precision"], out["defect_recall"]
    out["defect_f1"] = 2 * pr * rc / (pr + rc) if pr + rc else 0.0
    out["ece"] = expected_calibration_error(probs, labels)
    return out


def confusion_png(labels: np.ndarray, preds: np.ndarray, classes: tuple[str, ...], path: Path, title: str) -> Path:
    """The confusion matrix of the decisions ``preds`` (class indices at the operating point)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.metrics import confusion_matrix

    cm = confusion_matrix(labels, preds, labels=list(range(len(classes))))
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
    images: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    classes: tuple[str, ...],
    path: Path,
    n: int = 16,
) -> Path:
    """The ``n`` parts decided worst at the operating point: escapes (defects scoring lowest) and
    overkills (good parts scoring highest) first, then the closest calls when there are no errors.
    ``images``: one grey image per part (any size)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    defect = np.asarray(labels) != 0
    margin = np.where(defect, scores - threshold, threshold - scores)  # < 0: decided wrong
    order = np.argsort(margin)[:n]
    cols = 4
    rows = max(1, int(np.ceil(len(order) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.2, rows * 2.5))
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for ax, i in zip(np.atleast_1d(axes).ravel(), order, strict=False):
        img = images[i]
        ax.imshow(img if img.ndim == 2 else img[0], cmap="gray", vmin=0, vmax=255)
        wrong = margin[i] < 0
        what = ("ESCAPE" if defect[i] else "OVERKILL") if wrong else "close call"
        ax.set_title(
            f"{what}: true {classes[labels[i]]}\nscore {scores[i]:.3g} (reject >= {threshold:.3g})",
            fontsize=7,
            color="red" if wrong else "green",
        )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def frontier(scores: np.ndarray, labels: np.ndarray) -> list[tuple[float, float, float]]:
    """(threshold, escape rate, overkill rate) at every distinct score: the trade-off a plant
    chooses its operating point on."""
    import numpy as np

    is_defect = np.asarray(labels) != 0
    out = []
    for t in np.unique(np.asarray(scores, dtype=np.float64)):
        r = rates_at(scores, is_defect, float(t))
        out.append((float(t), r.escape_rate, r.overkill_rate))
    return out


def frontier_png(
    scores: np.ndarray,
    labels: np.ndarray,
    threshold: float,
    path: Path,
    title: str,
    max_escape_rate: float | None = None,
    max_overkill_rate: float | None = None,
) -> Path:
    """Escape rate against overkill rate over all thresholds, the operating point marked, the
    plant's targets as a shaded box (where a model must land)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = frontier(scores, labels)
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    ax.plot([p[2] * 100 for p in pts], [p[1] * 100 for p in pts], "-", color="tab:blue", lw=1.2, label="thresholds")
    r = rates_at(scores, labels != 0, threshold)
    ax.plot(
        [r.overkill_rate * 100], [r.escape_rate * 100], "o", color="tab:red",
        label=f"operating point ({threshold:.3g})",
    )  # fmt: skip
    if max_escape_rate is not None and max_overkill_rate is not None:
        ax.add_patch(
            matplotlib.patches.Rectangle(
                (0, 0), max_overkill_rate * 100, max_escape_rate * 100, color="tab:green", alpha=0.2, label="target"
            )
        )
    ax.set_xlabel("overkill: good parts rejected (%)")
    ax.set_ylabel("escape: defects passed (%)")
    ax.set_xlim(-1, 101)
    ax.set_ylim(-1, 101)
    ax.set_xscale("symlog", linthresh=1)
    ax.set_yscale("symlog", linthresh=1)
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
