"""`andon demo --quick`: the whole story against its own embedded stack (Prefect and MLflow
servers as processes, a plant worker, the signed gateway), so the story cannot rot; then a
re-run resumes: every chapter is done, only the summary is printed again."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

pytestmark = pytest.mark.slow


def test_the_quick_demo_tells_the_whole_story_and_resumes(
    stack_env: Path, casting_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from andon.registry import CHAMPION, alias_version
    from andon.storage import open_store
    from flows.demo import CHAPTERS, run_demo

    for var in ("ANDON_CONFIGS_DIR", "ANDON_MES_SECRET", "PREFECT_API_URL", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)  # the demo sets them for its process; restored after
    out = io.StringIO()
    state = run_demo(Console(file=out, width=120), casting=casting_dir, quick=True)
    text = out.getvalue()
    done = state["done"]
    assert list(done) == [key for key, _, _ in CHAPTERS], text

    data = done["data"]
    assert len(data["quarantined"]) == 1 and data["failed_rules"] >= 3
    assert all(data["datasets"][p] for p in ("plant-a", "plant-b", "plant-c"))
    assert done["central"]["version"] >= 1
    # the light failure: an alert, its event ran plant-b's retrain deployment to completion
    light = done["lighting"]
    assert light["alerts"] >= 1, text
    assert light["run"]["state"] == "Completed" and light["champion_after"] is not None
    # the MES event came through the signed gateway (the forged copy was refused)
    mes = done["mes"]
    assert mes["forged_status"] == 401 and mes["run"]["state"] == "Completed"
    # the bad version moved the defect rate and the rollback put the good one back
    rb = done["rollback"]
    assert rb["after"] == rb["good"] != rb["bad"]
    assert abs(rb["rate_bad"] - rb["rate_before"]) > 0.05
    assert alias_version("plant-a.surface-defects", CHAMPION) == rb["good"]
    assert done["explain"]["part"]
    assert open_store().exists(done["governance"]["report_key"])
    for url in ("/runs", "/artifacts", "/automations", "/#/models"):
        assert url in text
    # a re-run resumes: nothing is trained again, the summary comes back
    again = io.StringIO()
    run_demo(Console(file=again, width=120), casting=casting_dir, quick=True)
    assert again.getvalue().count("done earlier") == len(CHAPTERS) - 1
    assert "the day, in numbers" in again.getvalue()
    assert json.loads((stack_env / "demo" / "state.json").read_text())["done"].keys() == done.keys()
