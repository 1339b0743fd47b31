"""Hostile input at the scoring service's door, over real HTTP (uvicorn on loopback): every bad
request is a counted 4xx, never a 500; a row that does not fit the log never blocks the rows behind
it; health says when logging fails; nothing buffered is lost at shutdown; decompression bombs are
refused from the header; the plant fence and write-once evidence hold.

The champion is pinned to an untrained network: the door, not the model or the registry, is under
test here (tests/integration/test_serve.py covers champion pick-up through a real registry).
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import wait_until
from PIL import Image

from andon.config import load_plant
from andon.errors import StorageError
from andon.quality import OperatingPoint
from andon.scoring.batch import Champion
from andon.scoring.online import ScoringService, serve_in_thread
from andon.scoring.predlog import PredictionLog
from andon.storage import LocalObjectStore, ObjectInfo

pytestmark = pytest.mark.integration

CFG = load_plant("plant-b")  # camera: 128 x 128 grey


class PinnedService(ScoringService):
    """The real service with its champion pinned (no registry)."""

    def refresh_champion(self) -> None:
        if self.champion is None:
            from andon.models import build_model

            net = build_model("small_cnn", 1, 2, 8).eval()
            self.champion = Champion(
                "plant-b.surface-defects", 1, net, ["ok", "defect"], 32, OperatingPoint(threshold=0.5)
            )
        self.champion_error = ""


class FlakyStore(LocalObjectStore):
    """Fails every prediction-log write while ``down`` (a full disk, a dropped S3 connection)."""

    down = False

    def put(self, key: str, data: bytes, content_type: str | None = None) -> ObjectInfo:
        if self.down and key.startswith("predictions/"):
            raise StorageError(f"cannot write {key}: disk full")
        return super().put(key, data, content_type)


def png(size: tuple[int, int] = (128, 128), mode: str = "L", value: int = 0, fmt: str = "PNG") -> bytes:
    rng = np.random.default_rng(value)
    img = Image.fromarray(rng.integers(0, 255, (size[1], size[0]), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width x height`` pixels in a few hundred bytes (a bomb's header)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")
    )


@pytest.fixture
def store(tmp_path: Path) -> FlakyStore:
    return FlakyStore(tmp_path / "objects")


@pytest.fixture
def service(store: FlakyStore, andon_home: Path) -> PinnedService:
    return PinnedService(store, CFG, reload_seconds=3600, flush_seconds=0.05, max_bytes=200_000, explain=False)


@pytest.fixture
def client(service: PinnedService) -> Iterator[httpx.Client]:
    with serve_in_thread(service) as url, httpx.Client(base_url=url, timeout=60) as c:
        yield c


def _log(store: LocalObjectStore) -> Any:
    now = datetime.now(UTC)
    return PredictionLog(store, CFG.id).read(now - timedelta(hours=2), now + timedelta(hours=2))


def _post(client: httpx.Client, data: bytes, ctype: str = "image/png", **params: str) -> httpx.Response:
    return client.post("/v1/score", content=data, params=params, headers={"content-type": ctype})


def _rejected(client: httpx.Client) -> dict[str, int]:
    body: dict[str, int] = client.get("/healthz").json()["rejected_by_reason"]
    return body


# ---------------------------------------------------------------- point 1: typed JSON, a log that never stalls

HOSTILE_JSON: dict[str, Any] = {
    "int part_id": {"object_key": "plant-b/line-1/raw/x.png", "part_id": 12345},
    "dict sku": {"object_key": "plant-b/line-1/raw/x.png", "sku": {"$gt": ""}},
    "list line": {"object_key": "plant-b/line-1/raw/x.png", "line": ["line-1"]},
    "int object_key": {"object_key": 7},
    "null object_key": {"object_key": None},
    "a list, not an object": [{"object_key": "plant-b/line-1/raw/x.png"}],
    "unknown field": {"object_key": "plant-b/line-1/raw/x.png", "captured_at": "2026-11-30T10:00:00²"},
    "400-digit timestamp": {"object_key": "plant-b/line-1/raw/x.png", "captured_at": "9" * 400},
    "year 1 at +14:00": {"object_key": "plant-b/line-1/raw/x.png", "captured_at": "0001-01-01T00:00:00+14:00"},
    "NUL in part_id": {"object_key": "plant-b/line-1/raw/x.png", "part_id": "P\u00001"},
    "traversal part_id": {"object_key": "plant-b/line-1/raw/x.png", "part_id": "../../plant-a/x"},
    "long part_id": {"object_key": "plant-b/line-1/raw/x.png", "part_id": "p" * 5000},
    "huge int part_id": {"object_key": "plant-b/line-1/raw/x.png", "part_id": 10**300},
    "NaN sku": {"object_key": "plant-b/line-1/raw/x.png", "sku": float("nan")},
    "traversal key": {"object_key": "plant-b/../plant-a/line-1/raw/x.png"},
    "absolute key": {"object_key": "/etc/passwd"},
    "control char key": {"object_key": "plant-b/line-1/\x1b[31m.png"},
    "backslash key": {"object_key": "plant-b\\..\\plant-a\\x.png"},
    "over-long key": {"object_key": "plant-b/" + "k" * 300 + "/x.png"},
    "over-long key segments": {"object_key": "plant-b/" + "/".join(["k" * 200] * 5)},
}


def test_hostile_json_is_a_counted_4xx_and_the_log_keeps_flowing(
    client: httpx.Client, service: PinnedService, store: FlakyStore
) -> None:
    good = store.put("plant-b/line-1/raw/2026-11-30/b1/images/g.png", png()).key
    for what, body in HOSTILE_JSON.items():
        raw = json.dumps(body, allow_nan=True).encode()
        r = client.post("/v1/score", content=raw, headers={"content-type": "application/json"})
        assert 400 <= r.status_code < 500, (what, r.status_code, r.text)
        assert "Traceback" not in r.text and r.json()["detail"], what
    deep = b'{"object_key": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    r = client.post("/v1/score", content=deep, headers={"content-type": "application/json"})
    assert r.status_code in (413, 422), r.text
    health = client.get("/healthz").json()
    assert sum(health["rejected_by_reason"].values()) == len(HOSTILE_JSON) + 1, health
    assert health["rejected"] == len(HOSTILE_JSON) + 1
    # the rows behind the hostile requests are logged
    for i in range(5):
        r = client.post("/v1/score", json={"object_key": good, "part_id": f"G-{i}", "sku": "DSC-100"})
        assert r.status_code == 200, r.text
    service.stop()
    rows = _log(store)
    assert sorted(rows.part_id) == [f"G-{i}" for i in range(5)] and (rows.sku == "DSC-100").all()


def test_query_parameters_are_checked_like_json(client: httpx.Client, store: FlakyStore) -> None:
    cases = {
        "traversal part_id": ({"part_id": "../../x"}, 422),
        "NUL part_id": ({"part_id": "a\x00b"}, 422),
        "long sku": ({"sku": "S" * 1000}, 422),
        "unknown line": ({"line": "line-9"}, 422),
    }
    for what, (params, status) in cases.items():
        r = _post(client, png(), **params)
        assert r.status_code == status, (what, r.status_code, r.text)
    assert sum(_rejected(client).values()) == len(cases)
    assert not any(o.key.endswith(".png") for o in store.list("plant-b/")), "nothing stored for a refused request"


def _until(check: Any, what: str, limit: float = 30.0) -> Any:
    """Poll ``check`` until it returns something truthy (a state to reach, not a time to meet)."""
    import time

    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.02)
    raise AssertionError(f"never reached: {what}")


def test_a_failing_log_shows_in_health_and_recovers(client: httpx.Client, store: FlakyStore) -> None:
    store.down = True
    assert _post(client, png(), part_id="D-1").status_code == 200  # scoring goes on
    r = _until(lambda: (r := client.get("/healthz")).status_code == 503 and r, "health reports the failing log")
    body = r.json()
    assert body["status"] == "log-failing" and body["log"]["pending"] == 1, body
    assert body["log"]["failed_flushes"] >= 1 and "disk full" in body["log"]["last_error"]
    store.down = False
    r = _until(lambda: (r := client.get("/healthz")).status_code == 200 and r, "health recovers")
    assert r.json()["log"]["failed_flushes"] == 0 and r.json()["logged"] == 1, r.json()
    assert list(_log(store).part_id) == ["D-1"]


def test_buffered_rows_survive_a_shutdown_while_the_store_is_down(store: FlakyStore, andon_home: Path) -> None:
    service = PinnedService(store, CFG, reload_seconds=3600, flush_seconds=3600, explain=False)
    with serve_in_thread(service) as url, httpx.Client(base_url=url, timeout=60) as client:
        for i in range(3):
            assert _post(client, png(value=i), part_id=f"S-{i}").status_code == 200
        store.down = True
    # the log could not be written at shutdown: the rows were spooled locally, not dropped
    assert _log(store).empty
    store.down = False
    again = PinnedService(store, CFG, reload_seconds=3600, flush_seconds=0.05, explain=False)
    again.start()
    again.stop()
    assert sorted(_log(store).part_id) == ["S-0", "S-1", "S-2"]
    again.start()  # a second start finds nothing left to recover: nothing is logged twice
    again.stop()
    assert len(_log(store)) == 3


# ---------------------------------------------------------------- point 2 and 11: one image rule, bombs from the header


@pytest.mark.parametrize(("width", "height"), [(13_000, 13_000), (20_000, 20_000), (1, 200_000)])
def test_decompression_bombs_are_refused_from_the_header(
    client: httpx.Client, service: PinnedService, store: FlakyStore, width: int, height: int
) -> None:
    bomb = png_header_only(width, height)
    r = _post(client, bomb, part_id="BOMB-1")
    assert r.status_code == 422, r.text
    # refused on the declared size, before any pixel was decoded (a decode would say "does not decode")
    assert f"{width}x{height}" in r.json()["detail"] and "decode" not in r.json()["detail"], r.text
    assert _rejected(client) == {"bad_image": 1}
    assert _post(client, png(), part_id="OK-1").status_code == 200
    service.stop()
    rows = _log(store).set_index("part_id")
    assert rows.loc["BOMB-1", "predicted_class"] == "error" and f"{width}x{height}" in rows.loc["BOMB-1", "error"]
    assert rows.loc["OK-1", "predicted_class"] in ("ok", "defect")


def test_decodes_are_bounded_and_a_request_past_the_bound_is_a_counted_429(store: FlakyStore, andon_home: Path) -> None:
    service = PinnedService(store, CFG, reload_seconds=3600, explain=False, max_decodes=1, decode_wait_s=0.05)
    with serve_in_thread(service) as url, httpx.Client(base_url=url, timeout=60) as client:
        assert service._decodes.acquire(timeout=5)  # the one decode slot is busy (as with a slow image)
        try:
            r = _post(client, png(), part_id="WAIT-1")
        finally:
            service._decodes.release()
        assert r.status_code == 429 and "retry" in r.json()["detail"] and r.headers["retry-after"] == "1", r.text
        assert _rejected(client) == {"busy": 1}
        assert _post(client, png(), part_id="NEXT-1").status_code == 200  # the slot is free again


def _variants() -> dict[str, bytes]:
    """What a camera sends, and what it does not (plant-b: 128 x 128 grey, PNG / JPEG / BMP)."""
    rgb = png(mode="RGB")
    with Image.open(io.BytesIO(rgb)) as im:
        cmyk = io.BytesIO()
        im.convert("CMYK").save(cmyk, "JPEG")
    sixteen = io.BytesIO()
    Image.fromarray(np.full((128, 128), 40_000, dtype=np.uint16)).save(sixteen, "PNG")
    return {
        "grey png": png(),
        "grey jpeg": png(fmt="JPEG"),
        "grey bmp": png(fmt="BMP"),
        "rgb png": rgb,
        "rgba png": png(mode="RGBA"),
        "16-bit png": sixteen.getvalue(),
        "cmyk jpeg": cmyk.getvalue(),
        "gif": png(mode="P", fmt="GIF"),
        "tiff": png(fmt="TIFF"),
        "grey webp": png(fmt="WEBP"),
        "small png": png(size=(64, 64)),
    }


def test_online_refuses_exactly_what_the_gate_quarantines(client: httpx.Client) -> None:
    from andon.validation.images import camera_image_rules, image_stats_from_bytes, validate_images

    camera = CFG.camera_for("line-1")
    refused_online, refused_by_gate = set(), set()
    for what, data in _variants().items():
        r = _post(client, data, ctype="application/octet-stream", part_id=what.replace(" ", "-"))
        assert r.status_code in (200, 422), (what, r.status_code, r.text)
        if r.status_code == 422:
            refused_online.add(what)
        stats = image_stats_from_bytes(f"b/images/{what}", data, max_side=camera.side_range()[1])
        report = validate_images(__import__("pandas").DataFrame([stats]), **camera_image_rules(camera))
        if not report.success:
            refused_by_gate.add(what)
    assert refused_online == refused_by_gate
    assert refused_online == {
        "rgb png", "rgba png", "16-bit png", "cmyk jpeg", "gif", "tiff", "grey webp", "small png"
    }  # fmt: skip


# ---------------------------------------------------------------- point 7: the plant fence, write-once evidence


def test_object_keys_outside_the_plant_are_not_found_whether_they_exist_or_not(
    client: httpx.Client, store: FlakyStore
) -> None:
    foreign = store.put("plant-a/line-1/raw/2026-11-30/b1/images/secret.png", png()).key
    answers = {}
    for key in (foreign, "plant-a/line-1/raw/2026-11-30/b1/images/none.png", "plant-b/line-1/raw/none.png"):
        r = client.post("/v1/score", json={"object_key": key})
        answers[key] = (r.status_code, r.json()["detail"].replace(key, "<key>"))
    assert len(set(answers.values())) == 1 and next(iter(answers.values()))[0] == 404, answers
    assert _rejected(client) == {"not_found": 3}


def test_stored_evidence_is_write_once(client: httpx.Client, service: PinnedService, store: FlakyStore) -> None:
    first, second = png(value=1), png(value=2)
    r1 = _post(client, first, part_id="P-7")
    r2 = _post(client, second, part_id="P-7")
    r3 = _post(client, first, part_id="P-7")  # the same image again: the same evidence
    assert r1.status_code == r2.status_code == r3.status_code == 200
    k1, k2, k3 = (r.json()["object_key"] for r in (r1, r2, r3))
    assert k1 != k2 and k3 == k1
    service.stop()
    assert store.get(k1) == first and store.get(k2) == second  # the first kept, the second apart
    rows = _log(store)
    assert len(rows) == 3
    import hashlib

    for row in rows.itertuples():
        assert hashlib.sha256(store.get(row.object_key)).hexdigest() == row.sha256
    assert service.health()["evidence_conflicts"] == 1


def test_evidence_checks_of_different_parts_run_at_once_and_a_replayed_part_is_stored_once(
    tmp_path: Path, andon_home: Path
) -> None:
    """The store is asked whether a part's evidence exists outside the service-wide lock (on S3 a
    round trip per part): two parts' checks overlap (this store answers only when two are asking
    together; one at a time would time out), and the same part sent four times at once is
    claimed by exactly one request."""
    import threading
    from concurrent.futures import ThreadPoolExecutor
    from datetime import UTC, datetime

    class PairedStore(LocalObjectStore):
        together = threading.Barrier(2, timeout=30)
        paired = True

        def exists(self, key: str) -> bool:
            if self.paired:
                self.together.wait()
            return super().exists(key)

    store = PairedStore(tmp_path / "objects")
    service = PinnedService(store, CFG, reload_seconds=3600, explain=False)
    now = datetime(2026, 11, 30, 8, tzinfo=UTC)
    with ThreadPoolExecutor(2) as pool:
        claims = list(pool.map(lambda p: service._evidence_key("line-1", now, p, "png", "a" * 64), ["P-1", "P-2"]))
    assert [new for _, new in claims] == [True, True] and claims[0][0] != claims[1][0]
    store.paired = False
    with ThreadPoolExecutor(4) as pool:
        replays = list(pool.map(lambda _: service._evidence_key("line-1", now, "P-3", "png", "b" * 64), range(4)))
    assert len({key for key, _ in replays}) == 1 and sorted(new for _, new in replays) == [False, False, False, True]
    assert service._asking == {}


# ---------------------------------------------------------------- point 7: the service's identity


def test_a_service_with_a_token_refuses_requests_without_it(store: FlakyStore, andon_home: Path) -> None:
    token = "t" * 40
    service = PinnedService(store, CFG, reload_seconds=3600, flush_seconds=0.05, explain=False, token=token)
    with serve_in_thread(service) as url, httpx.Client(base_url=url, timeout=60) as c:
        for header in ({}, {"authorization": "Bearer " + "u" * 40}, {"authorization": "Basic " + token}):
            r = c.post("/v1/score", content=png(), headers={"content-type": "image/png", **header})
            assert r.status_code == 401, header
            assert token not in r.text
        ok = c.post(
            "/v1/score", content=png(), headers={"content-type": "image/png", "authorization": f"Bearer {token}"}
        )
        assert ok.status_code == 200, ok.text
        assert _rejected(c)["unauthenticated"] == 3
        assert c.get("/healthz").status_code == 200  # health stays open for the orchestrator's probes


def test_andon_serve_off_loopback_needs_a_token(monkeypatch: pytest.MonkeyPatch, andon_home: Path) -> None:
    from andon.errors import ConfigError
    from andon.scoring.online import serve
    from andon.settings import reset_settings

    monkeypatch.delenv("ANDON_SERVICE_TOKEN", raising=False)
    reset_settings()
    with pytest.raises(ConfigError, match="ANDON_SERVICE_TOKEN"):
        serve(CFG, LocalObjectStore(andon_home / "objects"), "0.0.0.0", 1)
    monkeypatch.setenv("ANDON_SERVICE_TOKEN", "short")
    reset_settings()
    with pytest.raises(ConfigError, match="32"):
        serve(CFG, LocalObjectStore(andon_home / "objects"), "127.0.0.1", 1)
    reset_settings()


def test_queued_images_have_a_byte_budget_and_refused_uploads_are_not_kept(store: FlakyStore, andon_home: Path) -> None:
    """Before: every refused bomb was queued whole to be stored as evidence (a flood of 10 in
    flight grew the service by 35 MB/s, bounded only by 10,000 jobs). The worker is not started
    here, so queued jobs stay queued."""
    from andon.httpkit import Rejected

    service = PinnedService(store, CFG, reload_seconds=3600, explain=False, max_queued_bytes=len(png()) + 1)
    service.refresh_champion()
    for i in range(20):  # refused images queue an error row only: no body held, none stored
        with pytest.raises(Rejected) as refused:
            service.score(png_header_only(13000, 13000), part_id=f"BOMB-{i}")
        assert refused.value.status == 422
    assert service.health()["queued_mb"] == 0
    service.score(png(), part_id="P-1")  # one image fits the budget
    with pytest.raises(Rejected) as busy:
        service.score(png(value=1), part_id="P-2")
    assert busy.value.status == 429 and busy.value.retry_after_s == 1
    assert service.health()["rejected_by_reason"]["busy"] == 1
    # the refused part's evidence claim is released (before: held for ever, so the part's next
    # request never stored its image); the queued part's stays until the worker stores it
    assert [k.rsplit("/", 1)[1] for k in service._claimed] == ["P-1.png"]


def test_a_failing_runtime_is_a_counted_503_and_the_part_is_logged_with_its_evidence(
    client: httpx.Client, service: PinnedService, store: FlakyStore
) -> None:
    """Before: an exception from the runtime reached the client as a 500, the part was not
    logged, and its evidence claim was never released."""
    assert _post(client, png(), part_id="WARM-1").status_code == 200
    champion = service.champion
    assert champion is not None
    working, calls = champion.predict, []

    def fails_once(images: np.ndarray) -> Any:
        calls.append(len(images))
        if len(calls) == 1:
            raise RuntimeError("ONNXRuntimeError: bad allocation")
        return working(images)

    champion.predict = fails_once  # type: ignore[method-assign]
    image = png(value=5)
    failed = _post(client, image, part_id="P-9")
    assert failed.status_code == 503 and "error row" in failed.json()["detail"], failed.text
    assert _rejected(client) == {"model_failed": 1}
    again = _post(client, image, part_id="P-9")  # the retry: scored, the same evidence
    assert again.status_code == 200, again.text
    service.stop()
    rows = _log(store).set_index("part_id")
    assert len(rows) == 3
    assert rows.loc["WARM-1", "predicted_class"] != "error"
    by_class = _log(store).query("part_id == 'P-9'").set_index("predicted_class")
    assert "bad allocation" in by_class.loc["error", "error"]
    assert by_class.loc["error", "object_key"] == by_class.drop("error").iloc[0]["object_key"]
    assert store.get(by_class.loc["error", "object_key"]) == image


def test_overload_is_a_counted_429_with_retry_after_and_metrics_say_so(store: FlakyStore, andon_home: Path) -> None:
    service = PinnedService(store, CFG, reload_seconds=3600, explain=False, max_in_flight=2)
    with serve_in_thread(service) as url, httpx.Client(base_url=url, timeout=60) as client:
        assert _post(client, png(), part_id="FIRST-1").status_code == 200
        with service._stats_lock:
            service._in_flight = 2  # two requests being scored (as under a flood)
        try:
            r = _post(client, png(), part_id="OVER-1")
        finally:
            with service._stats_lock:
                service._in_flight = 0
        assert r.status_code == 429 and r.headers["retry-after"] == "1" and "in flight" in r.json()["detail"]
        assert _post(client, png(), part_id="AFTER-1").status_code == 200
        metrics = client.get("/metrics").text
    assert 'andon_score_rejected_total{reason="busy"} 1.0' in metrics
    assert "andon_score_requests_total 3.0" in metrics
    assert "andon_score_latency_seconds_count 2.0" in metrics and "andon_score_batch_size_bucket" in metrics
    decided = [line for line in metrics.splitlines() if line.startswith("andon_score_decisions_total{")]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in decided) == 2


def test_every_request_up_to_the_limit_is_admitted_and_the_next_is_a_429_at_once(
    store: FlakyStore, andon_home: Path
) -> None:
    """44 requests held in a stuck forward pass are all admitted, and the 45th is refused at once.
    Before: the endpoint ran on anyio's pool of 40 threads, so requests 41-44 waited for a thread
    (the limit of 64 could never be reached) and a flood queued there without bound."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    service = PinnedService(store, CFG, reload_seconds=3600, explain=False, max_in_flight=44)
    with serve_in_thread(service) as url, httpx.Client(base_url=url, timeout=60) as client:
        assert _post(client, png(), part_id="WARM-1").status_code == 200
        champion = service.champion
        assert champion is not None
        working, stuck = champion.predict, threading.Event()

        def held(images: np.ndarray) -> Any:
            stuck.wait(60)
            return working(images)

        champion.predict = held  # type: ignore[method-assign]

        def one(i: int) -> int:
            with httpx.Client(base_url=url, timeout=60) as c:
                return _post(c, png(value=i), part_id=f"HELD-{i}").status_code

        with ThreadPoolExecutor(44) as pool:
            answers = [pool.submit(one, i) for i in range(44)]
            try:
                wait_until(lambda: service._in_flight == 44)
                over = _post(client, png(), part_id="OVER-1")
                assert over.status_code == 429 and over.headers["retry-after"] == "1", over.text
            finally:
                stuck.set()
            assert [a.result() for a in answers] == [200] * 44
        assert _rejected(client) == {"busy": 1} and service._in_flight == 0


def test_evidence_is_stored_by_several_threads_and_every_row_waits_for_its_image(
    tmp_path: Path, andon_home: Path
) -> None:
    """On S3 every evidence image is a round trip: one background thread stored 82-171 parts/s
    against moto (benchmarks/inference.py). Two parts' images are stored at once here (this store
    takes an image only while another is being taken; one at a time would time out), and each row
    is logged only after its image is stored (no row of the part is buffered or written while its
    image is being taken; a failed check here is a background error)."""
    import threading

    class PairedPuts(LocalObjectStore):
        together = threading.Barrier(2, timeout=30)

        def put_new(self, key: str, data: bytes, content_type: str | None = None) -> bool:
            assert "/online/" in key  # evidence is stored only where nothing is (write-once)
            part = key.rsplit("/", 1)[1].removesuffix(".png")
            assert service.writer.written == 0 and all(r["part_id"] != part for r in service.writer._rows)
            self.together.wait()
            return super().put_new(key, data, content_type)

    store = PairedPuts(tmp_path / "objects")
    service = PinnedService(store, CFG, reload_seconds=3600, flush_seconds=0.05, explain=False, store_threads=2)
    with serve_in_thread(service) as url, httpx.Client(base_url=url, timeout=60) as client:
        answers = [_post(client, png(value=i), part_id=f"P-{i}") for i in range(2)]
        assert [a.status_code for a in answers] == [200, 200]
        wait_until(lambda: service.health()["queue"] == 0)
        assert service.health()["background_errors"] == []
    rows = _log(store)
    assert sorted(rows.part_id) == ["P-0", "P-1"]
    for row in rows.itertuples():
        assert store.get(row.object_key) == png(value=int(row.part_id[2:]))


def test_two_processes_racing_for_one_part_keep_both_images_and_each_row_names_its_own(
    tmp_path: Path, andon_home: Path
) -> None:
    """Two serving processes (two services on one store, each with its own claims) get different
    images for one part id at the same instant: both claim it, since neither has stored yet. The
    conditional write lets exactly one land at ``P-1.png``; the other is kept apart and its row
    names where. Before: exists-then-put, so the second overwrote the first, or (checked a moment
    later) was refused with a background error while its row named the first image."""
    import hashlib

    store = LocalObjectStore(tmp_path / "objects")
    services = [PinnedService(store, CFG, reload_seconds=3600, explain=False) for _ in range(2)]
    answers = []
    for value, service in enumerate(services):
        service.refresh_champion()
        answers.append(service.score(png(value=value), part_id="P-1"))
    assert answers[0]["object_key"] == answers[1]["object_key"]  # both claimed the same key
    services[1].score(png(value=1), part_id="P-1")  # the second process's station retries
    for service in services:  # each background worker, one after the other
        service._stop.set()
        service._work()
        service.writer.flush()
        assert service.health()["background_errors"] == []
    rows = _log(store)
    assert len(rows) == 3 and rows.object_key.nunique() == 2
    for row in rows.itertuples():  # the retry's row too names the image it sent
        assert hashlib.sha256(store.get(row.object_key)).hexdigest() == row.sha256
    assert [s.health()["evidence_conflicts"] for s in services] == [0, 2]


def test_a_store_too_slow_to_drain_at_shutdown_loses_no_row(tmp_path: Path, andon_home: Path) -> None:
    """At stop, the background gets ``drain_seconds`` to store what is queued; past it the rows of
    what is left are logged with no image named (their images were not stored), and nothing
    is lost. Before: the store pool was closed under the worker, whose next hand-over raised
    and killed it, and every queued row was dropped."""
    import threading

    release = threading.Event()

    class Stuck(LocalObjectStore):
        def put_new(self, key: str, data: bytes, content_type: str | None = None) -> bool:
            assert release.wait(60)
            return super().put_new(key, data, content_type)

    store = Stuck(tmp_path / "objects")
    service = PinnedService(store, CFG, reload_seconds=3600, explain=False, store_threads=1, drain_seconds=0.5)
    service.start()
    for i in range(3):  # the first is being stored (stuck), the second in the worker's hand, the third queued
        service.score(png(value=i), part_id=f"P-{i}")
    stopping = threading.Thread(target=service.stop)
    stopping.start()
    try:
        wait_until(lambda: any("stopped before" in e for e in service.stats.background_errors))
    finally:
        release.set()
    stopping.join(60)
    rows = _log(store).set_index("part_id")
    assert sorted(rows.index) == ["P-0", "P-1", "P-2"]
    assert store.get(rows.loc["P-0", "object_key"]) == png(value=0)
    assert rows.loc["P-2", "object_key"] is None
    # the second: kept like the third when the pool had closed before the worker handed it over
    # (almost always), stored when the worker got there first
    key = rows.loc["P-1", "object_key"]
    assert key is None or store.get(key) == png(value=1)
    stopped = sum("stopped before" in e for e in service.stats.background_errors)
    assert stopped == (2 if key is None else 1)
