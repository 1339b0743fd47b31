"""Escape / overkill, their exact bounds, the operating point, and the gate's absolute rules (the
model that passes every part can never be champion, at any defect rate)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from andon.config import load_plant
from andon.lifecycle.promotion import check_rules
from andon.quality import (
    Rates,
    choose_operating_point,
    clopper_pearson_upper,
    decide,
    defects_needed,
    overkill_at_target,
    rates_at,
    tail_threshold,
)
from andon.training.evaluate import classification_metrics

CFG = load_plant("plant-b")  # max escape 3 %, max overkill 3 %, at least 20 defects


def test_clopper_pearson_matches_the_closed_form_and_the_edges() -> None:
    # with no escapes the exact bound is 1 - alpha^(1/n)
    for n in (1, 5, 20, 99, 453):
        assert clopper_pearson_upper(0, n) == pytest.approx(1 - 0.05 ** (1 / n), rel=1e-9)
    assert clopper_pearson_upper(3, 3) == 1.0 and clopper_pearson_upper(0, 0) == 1.0
    assert clopper_pearson_upper(2, 100) > 0.02 and clopper_pearson_upper(2, 100, 0.99) > clopper_pearson_upper(2, 100)
    # the fewest defects that can prove a rate
    assert defects_needed(0.03) == 99 and clopper_pearson_upper(0, 99) <= 0.03 < clopper_pearson_upper(0, 98)
    assert defects_needed(0.005) == 598 and defects_needed(0.0) is None


def test_rates_say_when_a_claim_is_unproven() -> None:
    r = Rates(escapes=0, defects=20, overkills=1, goods=380)
    assert r.escape_rate == 0.0 and r.overkill_rate == pytest.approx(1 / 380)
    assert r.escape_claim(0.03).startswith("unproven") and "99 defects" in r.escape_claim(0.03)
    assert Rates(0, 200, 0, 10).escape_claim(0.03) == "proven"
    assert Rates(0, 0, 0, 10).escape_claim(0.03) == "unproven: no defects evaluated"
    assert math.isnan(Rates(0, 0, 0, 0).escape_rate)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 1, allow_nan=False), st.booleans()), min_size=2, max_size=300),
    st.floats(0.0, 0.3),
)
def test_the_operating_point_meets_the_target_with_the_least_overkill(
    parts: list[tuple[float, bool]], target: float
) -> None:
    scores = np.array([p[0] for p in parts])
    defect = np.array([p[1] for p in parts])
    op = choose_operating_point(scores, defect, target)
    r = rates_at(scores, defect, op.threshold)
    if not defect.any():
        assert not op.feasible and r.overkills == 0
        return
    # the escape target holds on the data it was chosen on (at least one defect is always caught)
    allowed = min(math.floor(target * defect.sum() + 1e-9), int(defect.sum()) - 1)
    assert r.escapes <= allowed
    # no threshold with at most that many escapes rejects fewer good parts (unless the tail
    # estimate of few defects lowered it: then it is only ever more careful)
    tail = allowed == 0 and defect.sum() >= 3 and target > 0
    if not tail:
        for t in np.unique(scores):
            other = rates_at(scores, defect, float(t))
            if other.escapes <= allowed:
                assert r.overkills <= other.overkills
    assert op.validation == r.metrics()


def test_few_defects_set_the_threshold_from_the_tail_too() -> None:
    rng = np.random.default_rng(0)
    good = rng.beta(1, 30, 400)  # good parts score low
    defect = rng.beta(8, 2, 12)  # 12 defects, mostly high: the lowest one is luck
    scores = np.r_[good, defect]
    labels = np.r_[np.zeros(400, bool), np.ones(12, bool)]
    op = choose_operating_point(scores, labels, 0.03)
    assert op.threshold < defect.min()  # below the lowest defect seen: the tail reaches further
    # ... and spends half the overkill budget on the many good parts, whose rate it can measure
    spent = choose_operating_point(scores, labels, 0.03, max_overkill_rate=0.03)
    assert spent.threshold <= op.threshold and rates_at(scores, labels, spent.threshold).overkills <= 6
    assert rates_at(scores, labels, spent.threshold).overkills == 6 or spent.threshold < np.sort(good)[-6]
    # ... but never more than the whole budget: a wide tail (defect log-odds from -1 to 10)
    # asks for a threshold far below every good part, and gets the budget's instead
    wide = np.r_[good, 1 / (1 + np.exp(-np.linspace(-1, 10, 27)))]  # log-odds spread wide, lowest 0.27
    labels_b = np.r_[np.zeros(400, bool), np.ones(27, bool)]
    capped = choose_operating_point(wide, labels_b, 0.005, max_overkill_rate=0.01)
    assert tail_threshold(wide[labels_b], 0.005) < np.sort(good)[-5]  # the tail alone: more than 1 %
    assert rates_at(wide, labels_b, capped.threshold).overkills == 4  # 1 % of 400
    assert rates_at(wide, labels_b, capped.threshold).escapes == 0
    # with enough defects to resolve the target, the split itself decides: 3 % of 400 may escape
    many_scores = np.r_[good, rng.beta(8, 2, 400)]
    many_labels = np.r_[np.zeros(400, bool), np.ones(400, bool)]
    many = choose_operating_point(many_scores, many_labels, 0.03)
    assert rates_at(many_scores, many_labels, many.threshold).escapes == 12


def test_overkill_at_target_ranks_a_separating_model_first() -> None:
    defect = np.array([0] * 90 + [1] * 10, bool)
    good_model = np.where(defect, 0.9, 0.1) + np.linspace(0, 0.05, 100)
    blind = np.full(100, 0.2)
    assert overkill_at_target(good_model, defect, 0.0) == 0.0
    assert overkill_at_target(blind, defect, 0.0) == 1.0
    assert overkill_at_target(blind, np.zeros(100, bool), 0.0) == 1.0  # no defects: nothing to judge on


def test_decide_is_the_threshold_not_the_argmax() -> None:
    probs = np.array([[0.7, 0.3], [0.95, 0.05], [0.2, 0.8]])
    assert decide(probs, 0.25, ("ok", "defect")) == ["defect", "ok", "defect"]  # argmax would pass the first
    assert decide(probs, 0.9, ("ok", "defect")) == ["ok", "ok", "ok"]
    three = np.array([[0.5, 0.1, 0.4], [0.9, 0.06, 0.04]])
    assert decide(three, 0.3, ("ok", "scratch", "crack")) == ["crack", "ok"]  # the likeliest defect kind


def _metrics_of_decisions(reject: np.ndarray, defect: np.ndarray) -> dict[str, float]:
    """Gate metrics of a model whose decisions are ``reject`` (scores 1 / 0 at threshold 0.5)."""
    probs = np.stack([1 - reject.astype(float), reject.astype(float)], axis=1)
    m = classification_metrics(probs, defect.astype(np.int64), ("ok", "defect"), 0.5)
    m["latency_ms"] = 1.0
    return m


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 5000), st.integers(0, 5000))
def test_a_model_that_passes_every_part_is_never_champion(defects: int, goods: int) -> None:
    defect = np.array([True] * defects + [False] * goods)
    if len(defect) == 0:
        return
    passes_all = _metrics_of_decisions(np.zeros(len(defect), bool), defect)
    assert check_rules(passes_all, None, CFG), (defects, goods)
    # nor a blind model at the operating point chosen for it (a constant score rejects every part)
    scores = np.full(len(defect), 0.13)
    op = choose_operating_point(scores, defect, CFG.quality.max_escape_rate)
    blind = _metrics_of_decisions(scores >= op.threshold, defect)
    assert check_rules(blind, None, CFG)
    # against a champion too: the relative rules never excuse the absolute ones
    perfect = _metrics_of_decisions(defect, defect)
    assert check_rules(passes_all, perfect, CFG)


def test_the_gate_rules_in_the_floors_words() -> None:
    defect = np.array([True] * 40 + [False] * 400)
    good = _metrics_of_decisions(defect.copy(), defect)
    assert check_rules(good, None, CFG) == []
    one_escape = defect.copy()
    one_escape[0] = False  # 1 of 40 defects passed: 2.5 %, inside plant-b's 3 %
    assert check_rules(_metrics_of_decisions(one_escape, defect), None, CFG) == []
    two = one_escape.copy()
    two[1] = False  # 2 of 40: 5 %
    (why,) = check_rules(_metrics_of_decisions(two, defect), None, CFG)
    assert why.startswith("escape rate 5.0 %") and "maximum 3.0%" in why
    # the challenger may not escape more than the champion (1 point allowed)
    assert any("escape rate rises" in v for v in check_rules(_metrics_of_decisions(one_escape, defect), good, CFG))
    overkill = defect.copy()
    overkill[40:60] = True  # 20 of 400 good parts rejected: 5 %
    assert any(
        v.startswith("overkill rate 5.0 %") for v in check_rules(_metrics_of_decisions(overkill, defect), None, CFG)
    )
    few = np.array([True] * 5 + [False] * 400)
    assert any("only 5 defects" in v for v in check_rules(_metrics_of_decisions(few.copy(), few), None, CFG))
    strict = CFG.model_copy(update={"quality": CFG.quality.model_copy(update={"require_proven": True})})
    assert any("not proven" in v for v in check_rules(good, None, strict))  # 0 of 40: bound 7.2 % > 3 %
    slow = {**good, "latency_ms": 80.0}
    assert any("latency 80.0 ms" in v for v in check_rules(slow, None, CFG))
