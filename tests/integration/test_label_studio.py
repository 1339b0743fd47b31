"""Label Studio for real: a Label Studio server (its own virtual environment, `.venv-labelstudio`,
made by `make test`: its pins clash with Andon's) imports the export of a plant's label queue,
its tasks' images load over HTTP through `andon ui` (signed links, the file store behind them),
annotations made through its API come back into the label queue."""

from __future__ import annotations

import io
import os
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import REPO, free_port

pytestmark = pytest.mark.slow

TOKEN = "0123456789abcdef0123456789abcdef01234567"
HEADERS = {"Authorization": f"Token {TOKEN}"}


def _binary() -> Path | None:
    path = Path(os.environ.get("ANDON_LABEL_STUDIO_BIN", REPO / ".venv-labelstudio" / "bin" / "label-studio"))
    return path if path.exists() else None


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = _binary()
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("no Label Studio: `make test` makes .venv-labelstudio (label-studio==1.23.2)")
        pytest.skip("no Label Studio: `make labelstudio` makes .venv-labelstudio")
    port = free_port()
    data = tmp_path_factory.mktemp("label-studio")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "ANDON_", "MLFLOW_"))} | {
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",  # a fixed API token (1.17+ issues JWTs by default)
        "LABEL_STUDIO_USERNAME": "andon@example.com",
        "LABEL_STUDIO_PASSWORD": "andon-test-password-1",
        "LABEL_STUDIO_USER_TOKEN": TOKEN,
    }
    log = (data / "server.log").open("w")
    proc = subprocess.Popen(
        [str(binary), "start", "--no-browser", "--port", str(port), "--data-dir", str(data / "data")],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Label Studio did not start: {(data / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _png(seed: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (64, 64), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_export_annotate_in_label_studio_and_read_back(
    label_studio: str, andon_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from andon.config import load_plant
    from andon.httpkit import run_in_thread
    from andon.labeling.labels import ReviewLog
    from andon.labeling.queue import LABELED, LabelQueue, export_tasks, import_annotations, label_config
    from andon.settings import reset_settings
    from andon.storage import open_store
    from andon.web.app import build_floor, create_app

    store, cfg = open_store(), load_plant("plant-a")
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    for i in range(6):
        key = f"plant-a/line-1/raw/2026-11-26/B/images/p{i}.png"
        store.put(key, _png(i), "image/png")
        rows.append({"part_id": f"P-{i:03d}", "object_key": key, "line": "line-1", "reason": "uncertain",
                     "score": 0.1, "predicted_class": "ok", "confidence": 0.55,
                     "model": "plant-a.surface-defects v3", "queued_at": now})  # fmt: skip
    LabelQueue(store, cfg.id).append(rows)
    with run_in_thread(create_app(build_floor(store))) as ui:
        monkeypatch.setenv("ANDON_UI_URL", ui)
        reset_settings()
        tasks = export_tasks(store, cfg, LabelQueue(store, cfg.id).status())
        assert len(tasks) == 6 and all(t["data"]["image"].startswith(ui + "/o/") for t in tasks)
        with httpx.Client(base_url=label_studio, headers=HEADERS, timeout=60) as ls:
            project = ls.post("/api/projects", json={"title": "andon plant-a", "label_config": label_config(cfg)})
            assert project.status_code == 201, project.text
            pid = project.json()["id"]
            imported = ls.post(f"/api/projects/{pid}/import", json=tasks)
            assert imported.status_code == 201 and imported.json()["task_count"] == 6, imported.text
            listed = ls.get("/api/tasks", params={"project": pid, "page_size": 100}).json()["tasks"]
            assert len(listed) == 6
            for task in listed:  # what Label Studio's labeling page loads: the image, over HTTP, no session
                image = httpx.get(task["data"]["image"], timeout=30)
                assert image.status_code == 200 and image.content[:4] == b"\x89PNG"
            # a reviewer labels four parts in Label Studio (through its API); two stay open
            labels = {}
            for task, label in zip(sorted(listed, key=lambda t: t["data"]["part_id"])[:4],
                                   ["defect", "ok", "defect", "ok"], strict=True):  # fmt: skip
                result = [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}}]
                made = ls.post(f"/api/tasks/{task['id']}/annotations", json={"result": result})
                assert made.status_code == 201, made.text
                labels[task["data"]["part_id"]] = label
            export = ls.get(f"/api/projects/{pid}/export", params={"exportType": "JSON", "download_all_tasks": "true"})
            assert export.status_code == 200, export.text[:500]
    out = import_annotations(store, cfg, export.json())
    assert (out["imported"], out["skipped"]) == (4, 2)
    got = ReviewLog(store, cfg.id).read(now - timedelta(days=1), now + timedelta(days=1))
    assert dict(zip(got["part_id"], got["label"], strict=True)) == labels
    assert all(r.startswith("label-studio:") for r in got["reviewer"])  # who, from Label Studio's user
    status = LabelQueue(store, cfg.id).status()
    assert set(status.loc[status["status"] == LABELED, "part_id"]) == set(labels)
