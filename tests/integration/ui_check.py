"""Open the Prefect UI and the MLflow UI in headless Chromium (Selenium) and check what a user
must see after the demo: the per-plant deployments, a flow run's artifacts, the registered
models with their aliases. Saves a screenshot of each page.

Used by tests/integration/test_demo.py; also a script that refreshes the README's screenshots
from a running demo stack:

    .venv/bin/python tests/integration/ui_check.py --out docs/img
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


def browser_missing() -> str | None:
    """Why the check cannot run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    if not any(shutil.which(b) for b in CHROMIUM):
        return "no Chromium (apt-get install chromium chromium-driver; .ci/run does it)"
    if not shutil.which("chromedriver"):
        return "no chromedriver (apt-get install chromium-driver)"
    return None


def _driver() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900"):
        opts.add_argument(arg)
    opts.binary_location = next(p for b in CHROMIUM if (p := shutil.which(b)))
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)


_SCROLL_ALL = (  # every scrollable box to its end
    "document.querySelectorAll('*').forEach(e => {"
    " if (e.scrollHeight > e.clientHeight) e.scrollTop = e.scrollHeight; });"
)


def _dismiss(drv: Any) -> None:
    """Close what a first visit pops up over the page (MLflow's announcement and assistant)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    time.sleep(1)
    for button in drv.find_elements(By.CSS_SELECTOR, "button[aria-label='Close'], button[aria-label='close']"):
        try:
            if button.is_displayed():
                button.click()
        except Exception:  # gone, covered, detached: nothing to close then
            pass
    drv.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
    time.sleep(1.5)  # the overlay fades out


def _text(drv: Any) -> str:
    from selenium.webdriver.common.by import By

    return str(drv.find_element(By.TAG_NAME, "body").text)


def _until(drv: Any, *needles: str, timeout: float = 45, scroll: bool = False) -> str:
    """The page's text once every needle shows; a clear failure naming the missing ones."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        if scroll:
            drv.execute_script(_SCROLL_ALL)
        text = _text(drv)
        if all(n in text for n in needles):
            time.sleep(0.5)  # let the last rows paint before a screenshot
            return text
        time.sleep(0.5)
    missing = [n for n in needles if n not in text]
    raise AssertionError(f"{drv.current_url}: {missing} not on the page; it shows:\n{text[:1500]}")


def check_uis(prefect_ui: str, mlflow_ui: str, run_id: str, out: Path) -> dict[str, Path]:
    """Visit the pages; returns the screenshots taken. Raises AssertionError on what is missing."""
    from selenium.webdriver.common.by import By

    out.mkdir(parents=True, exist_ok=True)
    shots: dict[str, Path] = {}
    drv = _driver()
    try:

        def shot(name: str) -> None:
            shots[name] = out / f"{name}.png"
            drv.save_screenshot(str(shots[name]))

        prefect_ui, mlflow_ui = prefect_ui.rstrip("/"), mlflow_ui.rstrip("/")
        drv.get(f"{prefect_ui}/deployments")
        _until(drv, "Deployments", "plant:plant-a")
        search = drv.find_element(By.CSS_SELECTOR, "input[placeholder^='Search deployments']")
        search.send_keys("retrain")
        _until(drv, "retrain-plant-a", "retrain-plant-b", "retrain-plant-c")
        shot("prefect-deployments")

        drv.get(f"{prefect_ui}/runs/flow-run/{run_id}")
        # a readable run name, and the library's progress in its Logs tab (the default tab)
        # (which alert leads, drift or performance, is the monitoring policy's call on the demo's data)
        _until(drv, "retrain vision on andon.", "Artifacts", "Automation", "epoch 1/")
        time.sleep(2)  # the run graph
        shot("prefect-retrain-run")
        drv.find_element(By.CSS_SELECTOR, "li.p-tab#artifacts").click()
        _until(drv, "Task runs")
        _until(drv, "-retrain-decision", "-promotion", scroll=True)  # they load as they scroll into view
        shot("prefect-run-artifacts")

        drv.get(f"{prefect_ui}/automations")
        _until(drv, "retrains vision")
        shot("prefect-automations")

        drv.get(f"{mlflow_ui}/#/models")
        _until(drv, "central.surface-defects", "plant-a.surface-defects", "plant-b.surface-defects", "champion")
        _dismiss(drv)
        shot("mlflow-models")
        drv.get(f"{mlflow_ui}/#/models/plant-a.surface-defects")
        _until(drv, "@ champion", "previous-champion")
        _dismiss(drv)
        shot("mlflow-plant-a-versions")
    finally:
        drv.quit()
    return shots


def main() -> None:
    from andon.settings import get_settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    args = parser.parse_args()
    settings = get_settings()
    state = json.loads((settings.home / "demo" / "state.json").read_text())
    run_id = state["done"]["lighting"]["run"]["run_id"]
    ui = settings.prefect_api_url.removesuffix("/api")
    mlflow = f"http://{settings.host}:{settings.mlflow_port}"
    for name, path in check_uis(ui, mlflow, run_id, args.out).items():
        sys.stdout.write(f"{name}: {path}\n")


if __name__ == "__main__":
    main()
