"""The online scoring service over real HTTP (uvicorn on loopback), with a real registry: champion
pick-up without restart, bad requests, concurrent clients, and the log rows it leaves."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from test_training_lifecycle import CFG, SMALL, _dataset

from andon.scoring.online import ScoringService, serve_in_thread
from andon.scoring.predlog import PredictionLog
from andon.storage import open_store
from andon.synth.plant import synthesize_plant

pytestmark = pytest.mark.slow


def _wait_for_version(client: httpx.Client, version: int, timeout: float = 10.0) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        r = client.get("/healthz")
        if r.status_code == 200 and r.json()["model_version"] == version:
            return time.monotonic() - t0
        time.sleep(0.05)
    raise AssertionError(f"the service still serves {client.get('/healthz').json()} after {timeout} s")


def test_service_scores_logs_and_follows_the_champion(andon_home: Path, mlflow_tracking_uri: str) -> None:
    from andon.lifecycle.promotion import promote, rollback
    from andon.training.run import train_plant

    store = open_store()
    (batch,) = synthesize_plant(
        CFG,
        store,
        40,
        seed=41,
        defect_rate=0.3,
        start=datetime(2026, 11, 15, 9, tzinfo=UTC),
        lines=["line-1"],
        workers=1,
    )
    keys = sorted(o.key for o in store.list(f"{batch.prefix}/images/"))
    pngs = [store.get(k) for k in keys]
    # every part explained (the toy models rarely call a defect): the background path is exercised
    spec = CFG.recipe.explain.model_copy(update={"pass_sample": 1.0})
    cfg = CFG.model_copy(update={"recipe": CFG.recipe.model_copy(update={"explain": spec})})
    service = ScoringService(store, cfg, reload_seconds=0.2, flush_seconds=0.2, max_bytes=100_000)
    t0 = datetime.now(UTC) - timedelta(minutes=1)
    with serve_in_thread(service) as url, httpx.Client(base_url=url, timeout=30) as client:
        # no champion yet: the service is up, says so, and refuses to guess
        assert client.get("/healthz").status_code == 503
        r = client.post("/v1/score", content=pngs[0], headers={"content-type": "image/png"})
        assert r.status_code == 503 and "no champion" in r.json()["detail"]

        v1 = train_plant(store, CFG, [_dataset(store, 5)], recipe=SMALL)
        promote(store, CFG, force=True, reason="test")
        assert _wait_for_version(client, v1.version) < 5  # picked up without a restart

        r = client.post(
            "/v1/score", params={"part_id": "P-1", "line": "line-2", "sku": "DSC-100"}, content=pngs[0],
            headers={"content-type": "image/png"},
        )  # fmt: skip
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["part_id"] == "P-1" and body["model_version"] == v1.version and body["line"] == "line-2"
        assert set(body["probabilities"]) == {"ok", "defect"} and abs(sum(body["probabilities"].values()) - 1) < 1e-4
        assert body["predicted_class"] in ("ok", "defect") and body["object_key"].startswith("plant-b/line-2/online/")
        # by object key (JSON)
        r = client.post("/v1/score", json={"object_key": keys[1], "part_id": "P-2"})
        assert r.status_code == 200 and r.json()["object_key"] == keys[1]
        # bad requests: clear status and reason; an unreadable image is still logged as an error row
        bad = {
            "corrupt": (client.post("/v1/score", params={"part_id": "P-bad"}, content=b"\x89PNG garbage",
                                    headers={"content-type": "image/png"}), 422, "not an image"),
            "oversized": (client.post("/v1/score", content=b"\0" * 100_001, headers={"content-type": "image/png"}),
                          413, "over the limit"),
            "type": (client.post("/v1/score", content=b"hello", headers={"content-type": "text/plain"}), 415,
                     "content type"),
            "line": (client.post("/v1/score", params={"line": "line-9"}, content=pngs[2],
                                 headers={"content-type": "image/png"}), 422, "unknown line"),
            "empty": (client.post("/v1/score", content=b"", headers={"content-type": "image/png"}), 422, "empty"),
            "missing": (client.post("/v1/score", json={"object_key": "plant-b/nope.png"}), 404, "no object"),
            "json": (client.post("/v1/score", content=b"{", headers={"content-type": "application/json"}), 422,
                     "object_key"),
        }  # fmt: skip
        for what, (resp, status, text) in bad.items():
            assert resp.status_code == status and text in resp.json()["detail"], (what, resp.status_code, resp.text)

        # 20 concurrent clients, 5 parts each
        def one(i: int) -> int:
            png = pngs[3 + i % 30]
            resp = client.post(
                "/v1/score", params={"part_id": f"C-{i}"}, content=png, headers={"content-type": "image/png"}
            )
            return resp.status_code

        with ThreadPoolExecutor(max_workers=20) as pool:
            assert set(pool.map(one, range(100))) == {200}

        # a new champion, then a rollback: both served within seconds
        v2 = train_plant(store, CFG, [_dataset(store, 6)], recipe=SMALL)
        promote(store, CFG, force=True, reason="test v2")
        assert _wait_for_version(client, v2.version) < 5
        rollback(CFG, "test rollback")
        assert _wait_for_version(client, v1.version) < 5
        health = client.get("/healthz").json()
        assert health["requests"] >= 103 and not health["background_errors"], health
    # the server has stopped: every decision is in the log, once
    rows = PredictionLog(store, CFG.id).read(t0, datetime.now(UTC) + timedelta(minutes=1))
    assert rows.part_id.is_unique, rows.part_id[rows.part_id.duplicated()].tolist()
    expected = {"P-1", "P-2", "P-bad"} | {f"C-{i}" for i in range(100)}
    assert set(rows.part_id) == expected
    err = rows[rows.part_id == "P-bad"].iloc[0]
    assert err.predicted_class == "error" and "not an image" in err.error
    p1 = rows[rows.part_id == "P-1"].iloc[0]
    assert p1.sku == "DSC-100" and p1.model_version == v1.version and p1.latency_ms > 0
    assert store.get(p1.object_key) == pngs[0] and p1.sha256  # the uploaded image is kept for the audit
    scored = rows[rows.error.isna()]
    assert scored.explanation_key.notna().all() and (scored.explanation_method == "input_gradient").all()
    for key in scored.explanation_key:
        assert store.exists(key)


def test_andon_serve_on_two_processes_shares_the_port_sums_its_metrics_and_loses_no_row(
    andon_home: Path, mlflow_tracking_uri: str
) -> None:
    """`andon serve --processes 2` (the real CLI, two spawned serving processes on one socket):
    both answer, /metrics counts every request whichever process is scraped, a busy port fails
    at once, and after SIGTERM every decision is in the log exactly once."""
    import os
    import re
    import signal
    import socket
    import subprocess
    import sys

    from conftest import free_port

    from andon.lifecycle.promotion import promote
    from andon.training.run import train_plant

    store = open_store()
    (batch,) = synthesize_plant(
        CFG, store, 12, seed=43, defect_rate=0.3, start=datetime(2026, 11, 15, 10, tzinfo=UTC), lines=["line-1"],
        workers=1,
    )  # fmt: skip
    pngs = [store.get(o.key) for o in sorted(store.list(f"{batch.prefix}/images/"), key=lambda o: o.key)]
    train_plant(store, CFG, [_dataset(store, 5)], recipe=SMALL)
    promote(store, CFG, force=True, reason="test")
    exe = str(Path(sys.executable).with_name("andon"))
    args = [exe, "serve", "--plant", CFG.id, "--processes", "2", "--no-explain", "--compact-minutes", "0"]

    with socket.socket() as busy:  # a port in use: refused before any process starts
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        busy_port = str(busy.getsockname()[1])
        taken = subprocess.run([*args, "--port", busy_port], capture_output=True, text=True, timeout=120)
    assert taken.returncode != 0 and "cannot listen" in taken.stderr, taken.stderr[-2000:]

    port = free_port()
    t0 = datetime.now(UTC) - timedelta(minutes=1)
    proc = subprocess.Popen([*args, "--port", str(port)], env=os.environ.copy(), stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        seen: set[str] = set()
        while seen != {"1/2", "2/2"}:  # each new connection goes to one process; both must be up
            assert time.monotonic() < deadline and proc.poll() is None, f"processes answering: {seen}"
            try:
                r = httpx.get(f"{url}/healthz", timeout=5)
                if r.status_code == 200:
                    seen.add(r.json()["process"])
            except httpx.TransportError:
                pass
            time.sleep(0.1)

        def one(i: int) -> int:
            with httpx.Client(base_url=url, timeout=30) as c:  # a connection each: spread over both
                r = c.post(
                    "/v1/score", params={"part_id": f"M-{i}"}, content=pngs[i % len(pngs)],
                    headers={"content-type": "image/png"},
                )  # fmt: skip
                return r.status_code

        def per_process() -> dict[str, int]:
            counts: dict[str, int] = {}
            while len(counts) < 2:
                assert time.monotonic() < deadline
                body = httpx.get(f"{url}/healthz", timeout=5).json()
                counts[body["process"]] = body["requests"]
            return counts

        sent = 0
        deadline = time.monotonic() + 120
        while sent == 0 or 0 in per_process().values():  # until both processes have scored parts
            with ThreadPoolExecutor(max_workers=8) as pool:
                assert set(pool.map(one, range(sent, sent + 40))) == {200}
            sent += 40
        assert sum(per_process().values()) == sent
        scraped = {httpx.get(f"{url}/metrics", timeout=5).text for _ in range(6)}
        totals = {int(float(re.search(r"^andon_score_requests_total (\S+)$", s, re.M).group(1))) for s in scraped}
        assert totals == {sent}, totals  # the sum of both processes, whichever answered
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    rows = PredictionLog(store, CFG.id).read(t0, datetime.now(UTC) + timedelta(minutes=1))
    assert sorted(rows.part_id) == sorted(f"M-{i}" for i in range(sent))  # each once, none lost at shutdown
