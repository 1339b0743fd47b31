"""Control charts whose limits are designed from a false-alarm budget, not defaulted.

A plant says how many false alarms it accepts (``monitoring.false_alarms_per_30_days``, default
1, across all its series and charts). The budget is split in two: a share
(``monitoring.reviewed_budget_share``, default one half) for the few charts on reviewed labels
(accuracy, defect recall: the drops a plant must catch in minutes, from only ~60 labels a
window), the rest for the many data and prediction charts. With ``S`` charts in a group, ``W``
windows per 30 days and a group budget ``B``, each chart gets an in-control average run length
``ARL0 = S * W / B`` windows (one-sided series: per side; a two-sided chart splits it over both
sides), and its limit is solved for that ARL0:

- Shewhart (two-sided, on the window z-score): ``L = Phi^-1(1 - 1 / (2 ARL0))``.
- CUSUM (two-sided, reference ``k``): Siegmund's approximation
  ``ARL0_one_sided = (exp(2 k b) - 2 k b - 1) / (2 k^2)``, ``b = h + 1.166``, solved for ``h``.
- EWMA (two-sided, smoothing ``lambda``): the Brook-Evans Markov-chain ARL, solved for ``L``.

Inputs are window z-scores: ``(window mean - reference mean) / (reference sd / sqrt(n))``, with
an optional tolerance (the shift the model was trained to ignore) subtracted first, so the
charts test "outside what the model has seen" rather than "any change at all". Windows with
fewer than ``min_n`` observations do not update a chart: one bad image never alerts.

Example:
    >>> round(shewhart_limit(370.4), 2)
    3.0
    >>> round(cusum_arl0(0.5, 5.0))
    469
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from statistics import NormalDist

_N = NormalDist()


def shewhart_limit(arl0: float) -> float:
    return _N.inv_cdf(1 - 1 / (2 * arl0))


def cusum_arl0(k: float, h: float) -> float:
    """Two-sided in-control ARL of a CUSUM on N(0, 1) observations (Siegmund)."""
    b = h + 1.166
    one = (math.exp(2 * k * b) - 2 * k * b - 1) / (2 * k * k)
    return one / 2


def ewma_arl0(lam: float, L: float, states: int = 81) -> float:
    """Two-sided in-control ARL of an EWMA on N(0, 1) with limits ``+-L * sqrt(lam / (2 - lam))``
    (Brook-Evans Markov chain with ``states`` cells)."""
    import numpy as np

    c = L * math.sqrt(lam / (2 - lam))
    width = 2 * c / states
    centers = -c + width * (np.arange(states) + 0.5)
    lo, hi = centers - width / 2, centers + width / 2
    mean = (1 - lam) * centers[:, None]
    cdf = np.vectorize(_N.cdf)
    q = cdf((hi[None, :] - mean) / lam) - cdf((lo[None, :] - mean) / lam)
    arl = np.linalg.solve(np.eye(states) - q, np.ones(states))
    return float(arl[states // 2])


def _solve(fn: object, target: float, lo: float, hi: float) -> float:
    f = fn  # increasing in its argument
    for _ in range(60):
        mid = (lo + hi) / 2
        if f(mid) < target:  # type: ignore[operator]
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def cusum_limit(arl0: float, k: float = 0.5) -> float:
    return _solve(lambda h: cusum_arl0(k, h), arl0, 0.1, 60.0)


def ewma_limit(arl0: float, lam: float = 0.2) -> float:
    return _solve(lambda L: ewma_arl0(lam, L), arl0, 1.0, 8.0)


@dataclass(frozen=True)
class Limits:
    """Per-chart limits for one in-control ARL (in windows)."""

    arl0: float
    shewhart: float
    cusum_h: float
    ewma_L: float
    cusum_k: float = 0.5
    ewma_lambda: float = 0.2

    @classmethod
    def for_budget(cls, charts: int, windows_per_30_days: float, false_alarms_per_30_days: float = 1.0) -> Limits:
        return cls.for_arl0(charts * windows_per_30_days / false_alarms_per_30_days)

    @classmethod
    def for_arl0(cls, arl0: float, one_sided: bool = False) -> Limits:
        """Limits of a two-sided chart with in-control ARL ``arl0``; ``one_sided``: a chart that
        only alarms on one side, so that side alone may take the whole ARL (about half the
        two-sided ARL; exact for Shewhart, Siegmund's CUSUM, and close for EWMA)."""
        return _limits(max(2.0, arl0 / 2 if one_sided else arl0))


@lru_cache(maxsize=64)
def _limits(arl0: float) -> Limits:
    return Limits(arl0, shewhart_limit(arl0), cusum_limit(arl0), ewma_limit(arl0))


@dataclass(frozen=True)
class Budget:
    """A plant's false-alarm budget over its charts, split between the reviewed-label charts and
    the rest (see the module docstring)."""

    windows_per_30_days: float
    false_alarms_per_30_days: float
    reviewed_charts: int
    other_charts: int
    reviewed_share: float = 0.5

    def limits(self, reviewed: bool, one_sided: bool) -> Limits:
        share = self.reviewed_share if reviewed else 1 - self.reviewed_share
        if not self.reviewed_charts:
            share = 1.0
        charts = self.reviewed_charts if reviewed else self.other_charts
        arl0 = max(charts, 1) * self.windows_per_30_days / (self.false_alarms_per_30_days * max(share, 1e-6))
        return Limits.for_arl0(arl0, one_sided)


@dataclass
class ChartState:
    """Running state of the three charts of one series (kept between monitor runs)."""

    ewma: float = 0.0
    cusum_hi: float = 0.0
    cusum_lo: float = 0.0
    windows: int = 0
    history: list[float] = field(default_factory=list)  # the last z-scores, for the PNG
    # the same windows' end times, EWMA and CUSUM statistics and the limits they were held to:
    # the floor's page draws the three charts against time (andon/web/svg.py)
    at: list[str] = field(default_factory=list)
    ewma_history: list[float] = field(default_factory=list)
    cusum_history: list[float] = field(default_factory=list)
    limits: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ChartVerdict:
    z: float
    shewhart: bool
    ewma: bool
    cusum: bool
    ewma_value: float
    cusum_value: float

    @property
    def alarm(self) -> bool:
        return self.shewhart or self.ewma or self.cusum

    @property
    def rules(self) -> list[str]:
        return [n for n, hit in (("shewhart", self.shewhart), ("ewma", self.ewma), ("cusum", self.cusum)) if hit]


def update(state: ChartState, z: float, limits: Limits, keep: int = 288, at: str | None = None) -> ChartVerdict:
    """Feed one window's z-score (of the window ending ``at``) into the three charts; returns what breached."""
    lam, k = limits.ewma_lambda, limits.cusum_k
    state.ewma = lam * z + (1 - lam) * state.ewma
    state.cusum_hi = max(0.0, state.cusum_hi + z - k)
    state.cusum_lo = max(0.0, state.cusum_lo - z - k)
    state.windows += 1
    state.history = [*state.history[-(keep - 1) :], round(z, 4)]
    ewma_limit_now = limits.ewma_L * math.sqrt(lam / (2 - lam))
    cusum_value = max(state.cusum_hi, state.cusum_lo)
    if at is not None:
        state.at = [*state.at[-(keep - 1) :], at]
        state.ewma_history = [*state.ewma_history[-(keep - 1) :], round(state.ewma, 4)]
        state.cusum_history = [*state.cusum_history[-(keep - 1) :], round(cusum_value, 4)]
        state.limits = {"shewhart": round(limits.shewhart, 4), "ewma": round(ewma_limit_now, 4),
                        "cusum": round(limits.cusum_h, 4)}  # fmt: skip
    return ChartVerdict(
        z=z,
        shewhart=abs(z) > limits.shewhart,
        ewma=abs(state.ewma) > ewma_limit_now,
        cusum=cusum_value > limits.cusum_h,
        ewma_value=state.ewma,
        cusum_value=cusum_value,
    )


def reset(state: ChartState) -> None:
    """After an alarm is raised the statistics restart (the history stays for the picture)."""
    state.ewma = state.cusum_hi = state.cusum_lo = 0.0


def z_score(mean: float, n: int, ref_mean: float, ref_sd: float, tolerance: float = 0.0) -> float:
    """Window z-score of ``mean`` over ``n`` observations against the reference; a shift within
    ``tolerance`` (same units as the mean) counts as no shift."""
    if n <= 0 or ref_sd <= 0:
        return 0.0
    shift = mean - ref_mean
    excess = math.copysign(max(0.0, abs(shift) - tolerance), shift)
    return excess / (ref_sd / math.sqrt(n))
