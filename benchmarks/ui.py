"""The floor's web page (issue 18), served locally on this machine's cores, over real HTTP:

- review: label a part -> the next part's page (the POST, its redirect and the GET), p50/p95;
- dashboard of a plant with 30 days of 5-minute monitoring windows (8,640 chart files, 720
  hourly drift reports, 200 alerts): the HTML's time to last byte (first paint needs it and the
  stylesheet), warm and cold (the first request imports the registry client);
- the parts of 10,000 scored parts, paginated: first page; the baseline is what issue 18 replaces,
  the whole-window audit report (``andon audit``, every row and image inlined in one HTML), run on
  the same 10,000 parts in the same run;
- ``andon ui`` start: the process until /healthz answers.

Run: .venv/bin/python benchmarks/ui.py
"""

from __future__ import annotations

import io
import json
import os
import re
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

from _common import Recorder, free_port, isolated_home

PARTS, QUEUED, LABELS = 10_000, 300, 100
PASSWORD = "benchmark password 1"


def _png(seed: int) -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (128, 128), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def setup(store, plant: str, now: datetime) -> None:  # type: ignore[no-untyped-def]
    from andon.labeling.queue import LabelQueue
    from andon.scoring.predlog import PredictionLog

    images = [f"{plant}/line-1/raw/2026-11-26/B/images/p{i:05d}.png" for i in range(PARTS)]
    for i, key in enumerate(images):  # every part has its image: the whole audit inlines them all
        store.put(key, _png(i), "image/png")
    rows = [
        {
            "part_id": f"p{i:05d}", "line": "line-1", "sku": "S1", "scored_at": now - timedelta(seconds=PARTS - i),
            "object_key": images[i], "model_name": f"{plant}.surface-defects", "model_version": 1,
            "predicted_class": "defect" if i % 20 == 0 else "ok", "probabilities": [0.9, 0.1],
            "defect_score": 0.1, "threshold": 0.5, "margin": 0.8,
        }
        for i in range(PARTS)
    ]  # fmt: skip
    PredictionLog(store, plant).append(rows)
    LabelQueue(store, plant).append(
        {
            "part_id": f"p{i:05d}", "object_key": images[i], "line": "line-1", "reason": "uncertain", "score": 0.1,
            "predicted_class": "ok", "confidence": 0.6, "model": f"{plant}.surface-defects v1", "queued_at": now,
        }
        for i in range(QUEUED)
    )  # fmt: skip
    png = _png(0)
    start = now - timedelta(days=30)
    for w in range(30 * 24 * 12):  # a chart per 5-minute window
        store.put(f"reports/{plant}/charts/{start + timedelta(minutes=5 * w):%Y%m%dT%H%M%S}.png", png, "image/png")
    for h in range(30 * 24):  # an Evidently report per hour
        store.put(f"reports/{plant}/drift/{start + timedelta(hours=h):%Y%m%dT%H%M%S}.html", b"<html></html>")
    for a in range(200):
        rec = {
            "id": f"a{a:04d}", "event": "andon.drift.detected", "status": "open" if a % 10 == 0 else "acked",
            "opened_at": (start + timedelta(hours=a)).isoformat(), "acked_by": None, "acked_at": None,
            "cleared_at": None,
            "payload": {"series": "brightness", "value": 0.5, "reference": 0.6, "severity": "high", "report_key": None},
        }  # fmt: skip
        store.put(f"alerts/{plant}/a{a:04d}.json", json.dumps(rec).encode(), "application/json")


def evidently_cost(rec: Recorder, runs: int = 5) -> None:
    """What adding each hourly drift report to the Evidently workspace costs, beside writing its HTML
    (what every hourly monitor run already does): the report of 5,000 x 11 features, like the monitor's."""
    import tempfile
    from pathlib import Path

    import numpy as np
    import pandas as pd
    from evidently import Report
    from evidently.presets import DataDriftPreset

    from andon.monitoring.drift import add_to_workspace

    rng = np.random.default_rng(0)
    cols = ["brightness", "contrast", "sharpness", *(f"emb_{i}" for i in range(8))]
    ref = pd.DataFrame(rng.normal(size=(5000, len(cols))), columns=cols)
    html, add = [], []
    for r in range(runs):
        cur = pd.DataFrame(rng.normal(0.1 * r, 1, size=(5000, len(cols))), columns=cols)
        snapshot = Report([DataDriftPreset()]).run(cur, ref)
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            snapshot.save_html(str(Path(tmp) / "r.html"))
            html.append(time.perf_counter() - t)
        t = time.perf_counter()
        assert add_to_workspace("plant-a", snapshot, datetime(2026, 11, 26, r, tzinfo=UTC))
        add.append(time.perf_counter() - t)
    from andon.settings import get_settings

    folder = Path(get_settings().evidently_workspace)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / runs / 1e3
    rec.figure("evidently_workspace_add_per_hourly_run_s", statistics.median(add), "s", "reported",
               html_report_s=round(statistics.median(html), 3), ratio_to_html=round(statistics.median(add) /
               statistics.median(html), 2), kb_per_run=round(size, 1))  # fmt: skip


def main() -> None:
    import httpx

    isolated_home()
    from andon.httpkit import run_in_thread
    from andon.settings import get_settings
    from andon.storage import open_store
    from andon.web.app import build_floor, create_app
    from andon.web.auth import installation_users

    rec = Recorder("ui")
    plant = "plant-a"
    store = open_store()
    now = datetime.now(UTC)
    t0 = time.perf_counter()
    setup(store, plant, now)
    print(f"# set up {PARTS} parts, {QUEUED} queued, 30 days of windows in {time.perf_counter() - t0:.0f} s")
    installation_users().add("bench", PASSWORD, [plant])
    # the tracking store exists before the page starts (as under `andon up`), made by another process,
    # so this one is as cold as a fresh `andon ui`
    uri = get_settings().mlflow_tracking_uri
    subprocess.run([sys.executable, "-c", f"import mlflow; mlflow.MlflowClient({uri!r}).search_registered_models()"],
                   check=True, capture_output=True)  # fmt: skip
    floor = build_floor(store)
    with run_in_thread(create_app(floor)) as url, httpx.Client(base_url=url, timeout=60) as c:
        token = re.search(r'name="login_csrf" value="(\w+)"', c.get("/login").text).group(1)  # type: ignore[union-attr]
        c.post("/login", data={"login_csrf": token, "user": "bench", "password": PASSWORD, "next": "/"})

        t = time.perf_counter()
        first = c.get(f"/p/{plant}")
        cold = time.perf_counter() - t
        assert first.status_code == 200, first.text[:300]
        floor.queues[plant].loaded = 0  # the review page re-reads the queue (every 30 s): what that request pays
        t = time.perf_counter()
        c.get(f"/p/{plant}/review")
        rec.figure("review_queue_reread_ms", 1000 * (time.perf_counter() - t), "ms", "reported (once per 30 s)")
        warm = []
        for _ in range(10):
            t = time.perf_counter()
            c.get(f"/p/{plant}")
            c.get("/static/andon.css")
            warm.append(time.perf_counter() - t)
        rec.figure(
            "dashboard_30_days_first_request_s",
            cold,
            "s",
            "<= 1 (first paint)",
            note="the first request after start; the registry client is imported in the background",
        )
        rec.figure("dashboard_30_days_warm_p50_s", statistics.median(warm), "s", "<= 1 (first paint)")

        html = c.get(f"/p/{plant}/review").text
        csrf = re.search(r'name="csrf" value="(\w+)"', html).group(1)  # type: ignore[union-attr]
        lat = []
        for _ in range(LABELS):
            part = re.search(r'name="part_id" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]
            t = time.perf_counter()
            r = c.post(f"/p/{plant}/review", data={"csrf": csrf, "part_id": part, "label": "ok"}, follow_redirects=True)
            lat.append(time.perf_counter() - t)
            html = r.text
            assert part not in re.findall(r'id="part-id">([^<]+)<', html)
        lat.sort()
        rec.figure("review_label_to_next_p50_ms", 1000 * lat[len(lat) // 2], "ms", "<= 150 p95")
        rec.figure("review_label_to_next_p95_ms", 1000 * lat[int(0.95 * len(lat)) - 1], "ms", "<= 150 p95")

        t = time.perf_counter()
        page = c.get(f"/p/{plant}/parts")
        first_page = time.perf_counter() - t
        assert page.status_code == 200 and f"{PARTS} scored" in page.text, page.text[:500]
        rec.figure("parts_10000_first_page_s", first_page, "s", "<= 1")
        t = time.perf_counter()
        c.get(f"/p/{plant}/parts", params={"page_no": 150})
        rec.figure("parts_10000_page_150_s", time.perf_counter() - t, "s", "<= 1")

    from andon.config import load_plant
    from andon.explain.audit import audit_report

    t = time.perf_counter()
    out = get_settings().home / "audit"
    audit = audit_report(store, load_plant(plant), now - timedelta(days=1), now + timedelta(seconds=1), out)
    whole = time.perf_counter() - t
    size = audit.html_path.stat().st_size / 1e6
    rec.figure("audit_10000_whole_report_s", whole, "s", "baseline", html_mb=round(size, 1), rows=audit.rows)
    rec.figure("parts_first_page_vs_whole_report", whole / first_page, "x", "reported")

    evidently_cost(rec)

    port = free_port()
    env = os.environ | {"ANDON_UI_PORT": str(port)}
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "andon.cli", "ui", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.02)
        rec.figure("ui_start_s", time.perf_counter() - t, "s", "<= 3")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    rec.save()


if __name__ == "__main__":
    main()
