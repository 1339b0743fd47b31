"""The floor's numbers: escape rate, overkill rate, their confidence bounds, and the operating point.

- **escape rate**: the share of defective parts the model passes as ok (a customer finds them);
- **overkill rate**: the share of good parts the model rejects (scrap, re-inspection).

Both are read at a version's **operating point**: the decision threshold on the part's defect
score (``1 - p(ok)`` for a classifier, the anomaly score for an anomaly model) chosen on the
version's validation split to meet the plant's ``quality.max_escape_rate`` with the least
overkill. This module is the one place that turns scores into decisions: training, the promotion
gate, batch scoring, ``andon serve``, explanations and monitoring all call :func:`decide`.

A small escape rate cannot be claimed from few defects: 0 escapes in 20 defects still allows a
true rate of 14 % at 95 % confidence. Every escape figure carries its exact (Clopper-Pearson)
one-sided upper bound, and a claim is ``proven`` only when that bound meets the target.

Example:
    >>> import numpy as np
    >>> scores = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    >>> defect = np.array([False, False, False, True, True, True])
    >>> op = choose_operating_point(scores, defect, max_escape_rate=0.0)
    >>> rates_at(scores, defect, op.threshold).escape_rate, rates_at(scores, defect, op.threshold).overkill_rate
    (0.0, 0.0)
    >>> round(clopper_pearson_upper(0, 20), 3)
    0.139
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from andon.errors import DataError

if TYPE_CHECKING:
    import numpy as np

ScoreKind = Literal["defect_probability", "anomaly_score"]
DEFAULT_CONFIDENCE = 0.95


def clopper_pearson_upper(k: int, n: int, confidence: float = DEFAULT_CONFIDENCE) -> float:
    """Exact one-sided upper confidence bound of a binomial rate after ``k`` events in ``n`` trials
    (1.0 when there were no trials: nothing is known)."""
    if n <= 0:
        return 1.0
    if k >= n:
        return 1.0
    from scipy.stats import beta

    return float(beta.ppf(confidence, k + 1, n - k))


def defects_needed(target: float, confidence: float = DEFAULT_CONFIDENCE) -> int | None:
    """The fewest defects that can prove an escape rate <= ``target`` (with none escaping); None
    for a zero target, which no finite sample proves."""
    if target <= 0:
        return None
    if target >= 1:
        return 0
    return math.ceil(math.log(1 - confidence) / math.log(1 - target))


@dataclass(frozen=True)
class Rates:
    """Escape and overkill counts at one threshold, with their upper confidence bounds."""

    escapes: int
    defects: int
    overkills: int
    goods: int
    confidence: float = DEFAULT_CONFIDENCE

    @property
    def escape_rate(self) -> float:
        return self.escapes / self.defects if self.defects else math.nan

    @property
    def overkill_rate(self) -> float:
        return self.overkills / self.goods if self.goods else math.nan

    @property
    def escape_upper(self) -> float:
        return clopper_pearson_upper(self.escapes, self.defects, self.confidence)

    @property
    def overkill_upper(self) -> float:
        return clopper_pearson_upper(self.overkills, self.goods, self.confidence)

    def escape_claim(self, target: float) -> str:
        """``proven`` when the upper bound meets ``target``; else why not, in words."""
        if self.defects == 0:
            return "unproven: no defects evaluated"
        if self.escape_upper <= target:
            return "proven"
        need = defects_needed(target, self.confidence)
        return f"unproven at {self.confidence:.0%}: {self.defects} defects allow up to {self.escape_upper:.1%}" + (
            f" (proving {target:.1%} takes >= {need} defects)" if need is not None else ""
        )

    def metrics(self) -> dict[str, float]:
        """The numbers logged with a version (MLflow metrics, gate decisions)."""
        return {
            "escape_rate": self.escape_rate,
            "escape_rate_upper": self.escape_upper,
            "overkill_rate": self.overkill_rate,
            "overkill_rate_upper": self.overkill_upper,
            "defects": float(self.defects),
            "escapes": float(self.escapes),
            "goods": float(self.goods),
            "overkills": float(self.overkills),
        }


def rates_at(
    scores: np.ndarray, is_defect: np.ndarray, threshold: float, confidence: float = DEFAULT_CONFIDENCE
) -> Rates:
    """Escapes and overkills when every part scoring ``>= threshold`` is rejected."""
    import numpy as np

    scores = np.asarray(scores, dtype=np.float64)
    is_defect = np.asarray(is_defect, dtype=bool)
    reject = scores >= threshold
    return Rates(
        escapes=int((~reject & is_defect).sum()),
        defects=int(is_defect.sum()),
        overkills=int((reject & ~is_defect).sum()),
        goods=int((~is_defect).sum()),
        confidence=confidence,
    )


@dataclass(frozen=True)
class OperatingPoint:
    """A version's decision rule: reject a part when its score reaches ``threshold``."""

    threshold: float
    score: ScoreKind = "defect_probability"
    target_escape_rate: float = math.nan
    chosen_on: str = ""
    validation: dict[str, float] | None = None  # Rates.metrics() on the split it was chosen on
    feasible: bool = True  # the target was met on that split without rejecting every part
    pinned: bool = False  # fixed by the recipe (thresholds.defect_probability), not chosen

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> OperatingPoint:
        known = {k: raw[k] for k in cls.__dataclass_fields__ if k in raw}
        return cls(**known)

    def describe(self) -> str:
        how = "pinned by the recipe" if self.pinned else f"chosen on {self.chosen_on or 'validation'}"
        return f"reject at {self.score.replace('_', ' ')} >= {self.threshold:.4g} ({how})"


def choose_operating_point(
    scores: np.ndarray,
    is_defect: np.ndarray,
    max_escape_rate: float,
    *,
    score: ScoreKind = "defect_probability",
    confidence: float = DEFAULT_CONFIDENCE,
    chosen_on: str = "",
    max_overkill_rate: float | None = None,
) -> OperatingPoint:
    """The threshold that lets at most ``max_escape_rate`` of the defects through with the fewest
    good parts rejected: the highest threshold meeting the escape target, placed midway to the
    next lower score so that a part scoring like the last caught defect is still caught.

    With fewer defects than the target can resolve (fewer than ``1 / max_escape_rate``: not one
    escape is allowed), the lowest-scoring defect of a small split is a poor guess of the tail of
    all defects (on synthetic plant-b, 12 validation defects put the threshold where 8 % of new
    defects escaped, at 0.04 % overkill). Then the threshold is lowered to the lower of a tail
    estimate (a normal fit of the defect scores' log-odds at its ``max_escape_rate`` quantile) and,
    given ``max_overkill_rate``, the threshold that rejects half that budget of the split's good
    parts (good parts are many and their rate is measurable: spending half the budget buys escapes
    that a few defects cannot show); but never below the threshold that spends the whole budget
    (a tail estimate of castings' bimodal scores once asked for 62 % overkill).

    Without defects no escape target can be met or measured: the threshold is then set so that
    no good part of the split is rejected, and the point is marked infeasible."""
    import numpy as np

    scores = np.asarray(scores, dtype=np.float64)
    is_defect = np.asarray(is_defect, dtype=bool)
    if len(scores) == 0:
        raise DataError("no parts to choose an operating point on")
    if not np.isfinite(scores).all():
        raise DataError("scores contain NaN or infinity: the model's output is broken")
    defect_scores = np.sort(scores[is_defect])
    if len(defect_scores) == 0:
        threshold = float(np.nextafter(scores.max(), np.inf))
        rates = rates_at(scores, is_defect, threshold, confidence)
        return OperatingPoint(threshold, score, max_escape_rate, chosen_on, rates.metrics(), False)
    allowed = math.floor(max_escape_rate * len(defect_scores) + 1e-9)  # escapes the target tolerates
    allowed = min(allowed, len(defect_scores) - 1)  # at least one defect must be caught
    edge = defect_scores[allowed]  # the lowest-scoring defect that must still be rejected
    below = scores[scores < edge]
    threshold = float(edge)
    if len(below):
        mid = float((edge + below.max()) / 2)
        threshold = mid if below.max() < mid else threshold  # no float between two neighbours: the edge
    if allowed == 0:
        threshold = _few_defects(scores, is_defect, defect_scores, threshold, max_escape_rate, max_overkill_rate, score)
    rates = rates_at(scores, is_defect, threshold, confidence)
    feasible = rates.goods == 0 or rates.overkills < rates.goods
    return OperatingPoint(threshold, score, max_escape_rate, chosen_on, rates.metrics(), feasible)


def _few_defects(
    scores: np.ndarray,
    is_defect: np.ndarray,
    defect_scores: np.ndarray,
    threshold: float,
    max_escape_rate: float,
    max_overkill_rate: float | None,
    score: ScoreKind,
) -> float:
    """Lower ``threshold`` (which lets no validation defect through) when the split has too few
    defects to resolve the target: to the tail estimate and to half the overkill budget, whichever
    is lower, but never below the threshold that spends the whole budget: an extrapolation may
    not reject more good parts than the plant allows."""
    import numpy as np

    lower = []
    if score == "defect_probability" and len(defect_scores) >= 3 and max_escape_rate > 0:
        lower.append(tail_threshold(defect_scores, max_escape_rate))
    good = np.sort(scores[~is_defect])
    floor = -math.inf
    if max_overkill_rate is not None and len(good):

        def at_budget(share: float) -> float:
            spend = math.floor(share * len(good) + 1e-9)  # good parts a threshold may reject
            return float(np.nextafter(good[-spend - 1], np.inf)) if spend < len(good) else float(good[0])

        lower.append(at_budget(max_overkill_rate / 2))
        floor = at_budget(max_overkill_rate)
    if not lower:
        return threshold
    return min(threshold, max(floor, min(lower)))


def tail_threshold(defect_probabilities: np.ndarray, max_escape_rate: float) -> float:
    """The ``max_escape_rate`` quantile of a normal fit to the defects' log-odds, as a probability."""
    import numpy as np
    from scipy.stats import norm

    p = np.clip(np.asarray(defect_probabilities, dtype=np.float64), 1e-7, 1 - 1e-7)
    logit = np.log(p / (1 - p))
    q = float(logit.mean() + logit.std(ddof=1) * norm.ppf(max_escape_rate))
    return float(1 / (1 + math.exp(-q)))


def overkill_at_target(scores: np.ndarray, is_defect: np.ndarray, max_escape_rate: float) -> float:
    """The overkill rate at the operating point for ``max_escape_rate``: what a checkpoint or a
    candidate is judged by (lower is better; 1.0 when the split has no defects or no good parts)."""
    import numpy as np

    if not np.asarray(is_defect, dtype=bool).any() or np.asarray(is_defect, dtype=bool).all():
        return 1.0
    op = choose_operating_point(scores, is_defect, max_escape_rate)
    return rates_at(scores, is_defect, op.threshold).overkill_rate


def defect_scores(probs: np.ndarray) -> np.ndarray:
    """A classifier's defect score per part: ``1 - p(first class)``; the first class is the pass
    class (``ok``), every other class is a kind of defect."""
    import numpy as np

    probs = np.asarray(probs, dtype=np.float64)
    return 1.0 - probs[:, 0]


def decide(probs: np.ndarray, threshold: float, classes: list[str] | tuple[str, ...]) -> list[str]:
    """The class of each part at the operating point: the pass class below the threshold, else the
    most likely defect class. The one place a classifier's output becomes a decision."""
    import numpy as np

    probs = np.asarray(probs, dtype=np.float64)
    reject = defect_scores(probs) >= threshold
    worst = 1 + probs[:, 1:].argmax(axis=1) if probs.shape[1] > 1 else np.zeros(len(probs), int)
    return [classes[int(w)] if r else classes[0] for r, w in zip(reject, worst, strict=True)]


def decide_scores(scores: np.ndarray, threshold: float, classes: list[str] | tuple[str, ...]) -> list[str]:
    """The class of each part for a one-score model (anomaly): the pass class or the first defect class."""
    import numpy as np

    reject = np.asarray(scores, dtype=np.float64) >= threshold
    return [classes[1] if r else classes[0] for r in reject]


def fmt_rate(rate: float, upper: float | None = None) -> str:
    """``1.2 % (<= 4.1 %)`` for reports and the terminal."""
    if rate is None or (isinstance(rate, float) and math.isnan(rate)):
        return "n/a"
    text = f"{rate * 100:.1f} %"
    if upper is not None and not math.isnan(upper):
        text += f" (<= {upper * 100:.1f} %)"
    return text
