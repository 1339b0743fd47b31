"""Output injection (issue 16, point 10): what the line sends (SKU, part id, error text) reaches a
spreadsheet through ``audit.csv`` and the operator's terminal through ``andon explain``. Formula
cells are neutralized; control characters never reach the terminal; Rich markup in a part id is
plain text."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from andon.cli.main import app
from andon.config import load_plant
from andon.explain.audit import audit_report, csv_cell
from andon.scoring.predlog import PredictionLog
from andon.storage import open_store

pytestmark = pytest.mark.unit
T0 = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
FORMULAS = ['=HYPERLINK("http://x","y")', "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A9)", "\t=1", "\r=1"]
HOSTILE_SKU = "SKU\x1b[2J\x1b[31mRED\x07\rOVER\u202egnp.exe"


@pytest.fixture
def logged(andon_home: Path, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, object]]:
    """Prediction rows whose part ids and SKUs came from a hostile line, in the default store;
    lineage from the registry stubbed (no MLflow needed to render what was logged)."""
    import andon.explain.audit

    monkeypatch.setattr(andon.explain.audit, "lineage", lambda name, version: {"code_commit": "=cmd"})
    rows: list[dict[str, object]] = [
        {
            "part_id": pid,
            "line": "line-1",
            "sku": sku,
            "scored_at": T0 + timedelta(seconds=i),
            "model_name": "plant-a.surface-defects",
            "model_version": 3,
            "predicted_class": "defect",
            "probabilities": [0.2, 0.8],
            "error": err,
        }
        for i, (pid, sku, err) in enumerate(
            [*((f, f, None) for f in FORMULAS), ("[/]", HOSTILE_SKU, "[bold]x\x1b[0m"), ("[red]p[/red]", "ok", None)]
        )
    ]
    PredictionLog(open_store(), "plant-a").append(rows)
    return rows


def test_csv_cells_that_start_like_formulas_are_neutralized() -> None:
    for bad in FORMULAS:
        assert csv_cell(bad) == "'" + bad
    assert csv_cell("plant-a-000123") == "plant-a-000123" and csv_cell(-0.5) == -0.5 and csv_cell(None) is None


def test_audit_csv_never_hands_a_spreadsheet_a_formula(logged: list[dict[str, object]], tmp_path: Path) -> None:
    result = audit_report(open_store(), load_plant("plant-a"), T0, T0 + timedelta(hours=1), tmp_path / "audit")
    with result.csv_path.open(newline="") as f:
        cells = [c for row in csv.DictReader(f) for c in row.values() if c]
    assert result.rows == len(logged)
    dangerous = [c for c in cells if c[0] in "=+-@\t\r"]
    assert not dangerous, dangerous
    for bad in FORMULAS:
        assert "'" + bad in cells  # kept, readable, inert
    assert "'=cmd" in cells  # lineage too: every text cell goes through the same door


@pytest.mark.parametrize("part_id", ["[/]", "[red]p[/red]"])
def test_explain_prints_data_as_text_never_as_terminal_control_or_markup(
    logged: list[dict[str, object]], part_id: str
) -> None:
    args = [
        "explain",
        part_id,
        "--plant",
        "plant-a",
        "--from",
        T0.isoformat(),
        "--to",
        (T0 + timedelta(hours=2)).isoformat(),
    ]
    out = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert out.exit_code == 0, (out.output, out.exception)
    assert part_id in out.output  # the markup is shown literally, not interpreted
    assert not any((ord(ch) < 32 and ch != "\n") or ord(ch) == 0x7F or ch == "\u202e" for ch in out.output), repr(
        out.output
    )
    if part_id == "[/]":
        assert "\\x1b[2J" in out.output and "\\u202e" in out.output  # visible, harmless
        as_json = CliRunner().invoke(app, [*args, "--json"])
        assert as_json.exit_code == 0 and "\x1b" not in as_json.output
        assert json.loads(as_json.output)["sku"] == HOSTILE_SKU
