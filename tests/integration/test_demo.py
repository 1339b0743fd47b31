"""`andon demo --quick`: the whole story against its own embedded stack (Prefect and MLflow
servers as processes, plant workers, the signed gateway), so the story cannot rot; a re-run
resumes; and the browser check: the Prefect and MLflow UIs show what the demo made.

The demo runs as users run it, `andon demo` in its own process: whatever process-wide state it
sets (Prefect's API URL, the configs folder, the MES secret) stays there, so this module needs no
place in the test order."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port

# sharing the cores with the other worker the demo takes ~900 s; its subprocess limit (1,500 s) fires first
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def andon_demo(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``andon demo --quick`` from outside the repository, as an installed Andon is run."""
    return subprocess.run(
        [sys.executable, "-m", "andon.cli", "demo", "--quick", *args],
        env=env, capture_output=True, text=True, timeout=1500, check=False, cwd=Path(env["ANDON_HOME"]).parent,
    )  # fmt: skip


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory: pytest.TempPathFactory, casting_dir: Path) -> Iterator[dict[str, Any]]:
    """One quick demo in its own ANDON_HOME and ports; the stack is stopped afterwards. The test
    process reads what the demo made with the same settings (its home, its servers)."""
    from andon import stack
    from andon.settings import get_settings, reset_settings

    home = tmp_path_factory.mktemp("demo") / "home"
    ours = {
        "ANDON_HOME": str(home),
        "ANDON_PREFECT_PORT": str(free_port()),
        "ANDON_MLFLOW_PORT": str(free_port()),
        "ANDON_UI_PORT": str(free_port()),
        "ANDON_CONFIGS_DIR": str(home / "demo" / "configs"),  # where the demo writes its recipe
    }
    unset = ("ANDON_MES_SECRET", "PREFECT_API_URL", "MLFLOW_TRACKING_URI")
    env = {k: v for k, v in os.environ.items() if k not in unset and k != "ANDON_CONFIGS_DIR"}
    env |= {k: v for k, v in ours.items() if k != "ANDON_CONFIGS_DIR"} | {"COLUMNS": "120"}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in ours.items():
            mp.setenv(key, value)
        for var in unset:
            mp.delenv(var, raising=False)
        reset_settings()
        try:
            done = andon_demo(env, "--casting", str(casting_dir))
            assert done.returncode == 0, (done.stdout[-4000:], done.stderr[-4000:])
            state = json.loads((home / "demo" / "state.json").read_text())
            yield {"home": home, "env": env, "state": state, "text": done.stdout, "settings": get_settings()}
        finally:
            stack.down(get_settings())
            import mlflow

            mlflow.set_tracking_uri(None)  # the checks below pointed it at the demo's server
    reset_settings()


def test_the_quick_demo_tells_the_whole_story(quick_demo: dict[str, Any]) -> None:
    from andon.cli.demo.story import CHAPTERS
    from andon.lifecycle.registry import CHAMPION, alias_version
    from andon.storage import open_store

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
    from andon.cli.demo.story import CHAPTERS

    again = andon_demo(quick_demo["env"], "--casting", str(casting_dir))
    assert again.returncode == 0, again.stderr[-4000:]
    text = again.stdout
    assert text.count("done earlier") == len(CHAPTERS) - 1, text
    assert "already running" in text and "the day, in numbers" in text
    # a full demo does not mix into a quick one's home: a clear error, exit code 1, no traceback
    full = subprocess.run(
        [sys.executable, "-m", "andon.cli", "demo", "--casting", str(casting_dir)],
        env=quick_demo["env"], capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert full.returncode == 1 and "holds a quick demo" in full.stdout + full.stderr, full
    assert "Traceback" not in full.stderr
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
