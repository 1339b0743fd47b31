"""Control-chart limits from a false-alarm budget, checked against published ARLs and by simulation."""

from __future__ import annotations

import numpy as np
import pytest

from andon.monitoring.charts import (
    Budget,
    ChartState,
    Limits,
    cusum_arl0,
    cusum_limit,
    ewma_arl0,
    ewma_limit,
    shewhart_limit,
    update,
    z_score,
)


def test_limits_match_published_run_lengths() -> None:
    assert shewhart_limit(370.4) == pytest.approx(3.0, abs=0.01)
    assert cusum_arl0(0.5, 5.0) == pytest.approx(469, rel=0.02)  # one-sided 938 (Siegmund), two-sided half
    assert ewma_arl0(0.1, 2.814) == pytest.approx(500, rel=0.03)  # Lucas & Saccucci (1990)
    assert ewma_arl0(0.2, 2.86) == pytest.approx(370, rel=0.03)
    assert cusum_arl0(0.5, cusum_limit(1000)) == pytest.approx(1000, rel=1e-3)
    assert ewma_arl0(0.2, ewma_limit(1000)) == pytest.approx(1000, rel=1e-3)


def test_budget_sets_the_run_length() -> None:
    lim = Limits.for_budget(charts=60, windows_per_30_days=8640, false_alarms_per_30_days=1)
    assert lim.arl0 == 60 * 8640 and lim.shewhart > 4.5 and lim.cusum_h > lim.shewhart
    looser = Limits.for_budget(charts=60, windows_per_30_days=8640, false_alarms_per_30_days=30)
    assert looser.shewhart < lim.shewhart and looser.cusum_h < lim.cusum_h


def test_budget_split_between_reviewed_and_other_charts_spends_exactly_the_budget() -> None:
    from statistics import NormalDist

    budget = Budget(8640, 1.0, reviewed_charts=6, other_charts=42, reviewed_share=0.5)
    reviewed, other = budget.limits(True, True), budget.limits(False, False)
    # expected false alarms per 30 days: charts x windows x P(alarm per window), per group
    p_reviewed = 1 - NormalDist().cdf(reviewed.shewhart)  # one side only
    p_other = 2 * (1 - NormalDist().cdf(other.shewhart))
    assert 6 * 8640 * p_reviewed == pytest.approx(0.5, rel=1e-6)
    assert 42 * 8640 * p_other == pytest.approx(0.5, rel=1e-6)
    assert reviewed.shewhart < other.shewhart  # the few reviewed charts get the looser limits
    assert budget.limits(False, True).shewhart < other.shewhart  # one side may take the whole ARL
    # all of the budget to the other charts when there is no reviewed series
    alone = Budget(8640, 1.0, reviewed_charts=0, other_charts=42).limits(False, False)
    assert alone.arl0 == pytest.approx(42 * 8640)


def _first_alarm(limits: Limits, shift: float, rng: np.random.Generator, chart: str, cap: int = 20_000) -> int:
    state = ChartState()
    for t in range(1, cap + 1):
        v = update(state, rng.normal() + shift, limits, keep=1)
        if chart in v.rules:
            return t
    return cap


@pytest.mark.parametrize("chart", ["shewhart", "ewma", "cusum"])
def test_simulated_in_control_run_length_is_near_the_design(chart: str) -> None:
    limits = Limits(200, shewhart_limit(200), cusum_limit(200), ewma_limit(200))
    rng = np.random.default_rng(7)
    runs = [_first_alarm(limits, 0.0, rng, chart) for _ in range(150)]
    assert 120 < np.mean(runs) < 320, np.mean(runs)


def test_cusum_and_ewma_find_a_small_shift_sooner_than_shewhart() -> None:
    limits = Limits(2000, shewhart_limit(2000), cusum_limit(2000), ewma_limit(2000))
    rng = np.random.default_rng(3)
    delay = {
        c: np.median([_first_alarm(limits, 1.0, rng, c) for _ in range(100)]) for c in ("shewhart", "cusum", "ewma")
    }
    assert delay["cusum"] < delay["shewhart"] / 3 and delay["ewma"] < delay["shewhart"] / 3, delay


def test_tolerance_absorbs_shifts_the_model_was_trained_on() -> None:
    assert z_score(105.0, 100, 100.0, 10.0, tolerance=0.0) == pytest.approx(5.0)
    assert z_score(105.0, 100, 100.0, 10.0, tolerance=6.0) == 0.0
    assert z_score(92.0, 100, 100.0, 10.0, tolerance=6.0) == pytest.approx(-2.0)
    assert z_score(92.0, 0, 100.0, 10.0) == 0.0
