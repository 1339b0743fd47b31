"""`andon demo --quick`: the whole story against its own embedded stack (Prefect and MLflow
servers as processes, plant workers, the signed gateway), so the story cannot rot; a re-run
resumes; and the browser check: the Prefect and MLflow UIs show what the demo made."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from conftest import free_port
from rich.console import Console

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory: pytest.TempPathFactory, casting_dir: Path) -> Iterator[dict[str, Any]]:
    """One quick demo in its own ANDON_HOME and ports; the stack is stopped afterwards."""
    from andon import stack
    from andon.settings import get_settings, reset_settings
    from cli.demo.story import run_demo

    home = tmp_path_factory.mktemp("demo") / "home"
    # the demo sets PREFECT_API_URL, ANDON_CONFIGS_DIR, ANDON_MES_SECRET, MLFLOW_* for its process:
    # all of it is put back for the tests after this module
    with mock.patch.dict(os.environ), pytest.MonkeyPatch.context() as mp:
        mp.setenv("ANDON_HOME", str(home))
        mp.setenv("ANDON_PREFECT_PORT", str(free_port()))
        mp.setenv("ANDON_MLFLOW_PORT", str(free_port()))
        for var in ("ANDON_CONFIGS_DIR", "ANDON_MES_SECRET", "PREFECT_API_URL", "MLFLOW_TRACKING_URI"):
            mp.delenv(var, raising=False)
        reset_settings()
        out = io.StringIO()
        try:
            state = run_demo(Console(file=out, width=120), casting=casting_dir, quick=True)
            yield {"home": home, "state": state, "text": out.getvalue(), "settings": get_settings()}
        finally:
            stack.down(get_settings())
    reset_settings()


def test_the_quick_demo_tells_the_whole_story(quick_demo: dict[str, Any]) -> None:
    from andon.lifecycle.registry import CHAMPION, alias_version
    from andon.storage import open_store
    from cli.demo.story import CHAPTERS

    done, text = quick_demo["state"]["done"], quick_demo["text"]
    assert list(done) == [key for key, _, _ in CHAPTERS], text
    data = done["data"]
    assert len(data["quarantined"]) == 1 and data["failed_rules"] >= 3
    assert all(data["datasets"][p] for p in ("plant-a", "plant-b", "plant-c"))
    assert done["central"]["version"] >= 1
    # every champion is judged in the floor's words; one that missed its gate is on the record as forced
    champions = done["fine-tune"]["champions"]
    for plant, c in champions.items():
        assert 0 <= c["escape_rate"] <= 1 and 0 <= c["overkill_rate"] <= 1 and c["defects"] >= 1, (plant, c)
        assert c["passed"] or "forced past the gate" in text, (plant, c)
    assert "escape" in text and "overkill" in text and "held-out accuracy" not in text
    assert all(p["scored"] > 0 for p in done["production"]["scored"].values())
    # the light failure: alerts; one event ran plant-b's retrain deployment, and it retrained
    light = done["lighting"]
    assert light["alerts"] >= 1 and "one cause, one retrain" in text, text
    assert light["dark_shift"]["parts"] == 100 and f"v{light['champion_before']}" in light["dark_shift"]
    assert light["run"]["state"] == "Completed" and light["policy"].startswith("retrain"), light
    # the MES event came through the signed gateway (the forged copy was refused) and ran too
    mes = done["mes"]
    assert mes["forged_status"] == 401 and mes["run"]["state"] == "Completed"
    assert mes["policy"].startswith("retrain"), mes
    # the bad version moved the rejected share; the rollback put the good one back
    rb = done["rollback"]
    assert rb["after"] == rb["good"] != rb["bad"]
    assert abs(rb["rate_bad"] - rb["rate_before"]) > 0.05
    assert "ROLLED BACK plant-a.surface-defects@champion" in text and "training.learning_rate" in text
    assert alias_version("plant-a.surface-defects", CHAMPION) == rb["good"]
    assert done["explain"]["part"] and done["explain"]["part"] in text
    assert open_store().exists(done["governance"]["report_key"])
    for where in ("/runs", "/artifacts", "/automations", "/#/models", "the day, in numbers"):
        assert where in text


def test_a_rerun_resumes_and_prints_the_summary(quick_demo: dict[str, Any], casting_dir: Path) -> None:
    from cli.demo.story import CHAPTERS, run_demo

    with mock.patch.dict(os.environ), pytest.MonkeyPatch.context() as mp:
        mp.setenv("ANDON_HOME", str(quick_demo["home"]))
        mp.setenv("ANDON_PREFECT_PORT", str(quick_demo["settings"].prefect_port))
        mp.setenv("ANDON_MLFLOW_PORT", str(quick_demo["settings"].mlflow_port))
        from andon.settings import reset_settings

        reset_settings()
        again = io.StringIO()
        run_demo(Console(file=again, width=120), casting=casting_dir, quick=True)
        text = again.getvalue()
        assert text.count("done earlier") == len(CHAPTERS) - 1, text
        assert "already running" in text and "the day, in numbers" in text
        # a full demo does not mix into a quick one's home
        from andon.errors import ConfigError

        with pytest.raises(ConfigError, match="holds a quick demo"):
            run_demo(Console(file=io.StringIO()), casting=casting_dir, quick=False)
        state = json.loads((quick_demo["home"] / "demo" / "state.json").read_text())
        assert list(state["done"]) == [key for key, _, _ in CHAPTERS]


@pytest.mark.browser
def test_the_uis_show_deployments_artifacts_and_aliases(quick_demo: dict[str, Any], tmp_path: Path) -> None:
    from ui_check import browser_missing, check_uis

    why = browser_missing()
    if why:
        pytest.skip(why)
    s = quick_demo["settings"]
    run_id = quick_demo["state"]["done"]["lighting"]["run"]["run_id"]
    out = Path(os.environ.get("ANDON_SCREENSHOTS", tmp_path))
    shots = check_uis(f"http://{s.host}:{s.prefect_port}", f"http://{s.host}:{s.mlflow_port}", run_id, out)
    assert len(shots) == 6 and all(p.stat().st_size > 10_000 for p in shots.values())
