"""The audit report speaks escape and overkill: each reviewed decision's outcome, and the window's
escapes and overkills among the reviewed parts."""

from andon.explain.audit import floor_summary, outcome


def test_each_reviewed_decision_is_an_escape_an_overkill_or_correct() -> None:
    assert outcome("ok", "defect", "ok") == "escape"
    assert outcome("defect", "ok", "ok") == "overkill"
    assert outcome("defect", "defect", "ok") == "correct" and outcome("ok", "ok", "ok") == "correct"
    assert outcome("scratch", "crack", "ok") == "correct"  # rejected: the kind of defect is second
    assert outcome("ok", None, "ok") is None and outcome("error", "defect", "ok") is None


def test_the_windows_escapes_and_overkills_among_reviewed_parts() -> None:
    pairs = [("ok", "defect"), ("defect", "defect"), ("defect", "defect"), ("defect", "ok"), ("ok", "ok"), ("ok", None)]
    rows = [{"predicted_class": p, "reviewed_label": r, "outcome": outcome(p, r, "ok")} for p, r in pairs]
    floor = floor_summary(rows, "ok")
    assert floor["reviewed"] == 5
    assert floor["escapes"].startswith("1 of 3 reviewed defects (33.3 %")
    assert floor["overkills"].startswith("1 of 2 reviewed good parts (50.0 %")
    assert floor_summary([], "ok") == {"reviewed": 0}
