"""Inference near the machine's limit (issue 19), side by side in one run on this machine:

- bare forward of one trained plant-b champion (small_cnn, 128 px, batch 64) in every runtime:
  torch folded (the baseline), ONNX Runtime fp32 / int8, OpenVINO fp32 / bf16 / int8; alternating
  one-second rounds, best round kept, ratios to torch folded;
- each runtime's escape and overkill at the version's operating point on a golden set (the 715
  real casting test images, plant-a), against torch fp32, for three training seeds (small_cnn,
  600 casting images, 6 epochs): does bf16 or int8 move a decision rate by more than 0.5 point?
  (what the promotion gate checks);
- ``score_batch`` end to end (fetch, checks, decode, predict, log) on the runtime the gate
  verified first, against that runtime's bare forward;
- ``andon serve`` on one process and on two (``--processes 2``): 20 concurrent clients (Python
  threads here, and ``wrk``, a C load generator, when it is installed: ``apt-get install wrk``;
  the Python clients take a share of the same 2 cores), and 20 lines at 10 parts/s each
  (client-side and in-service latency).

Run: .venv/bin/python benchmarks/inference.py [--parts 4000] [--seeds 3]
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from typing import Any

from _common import Recorder, casting_manifest, isolated_home

RUNTIMES = ("torch", "onnxruntime-fp32", "onnxruntime-int8", "openvino-fp32", "openvino-bf16", "openvino-int8")


def _pct(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q))


def _dataset(store: Any, cfg: Any, parts: int, seed: int, day: int) -> tuple[str, Any]:
    from andon.data.batches import parquet_to_frame
    from andon.data.datasets import build_manifest, save_manifest
    from andon.synth.plant import synthesize_plant

    (batch,) = synthesize_plant(
        cfg, store, parts, seed=seed, defect_rate=0.3, lines=["line-1"], batch_size=100_000,
        start=datetime(2026, 11, day, tzinfo=UTC),
    )  # fmt: skip
    meta = parquet_to_frame(store.get(batch.metadata_key))
    manifest = build_manifest(
        cfg.id, [{"key": r.image_key, "sha256": r.sha256, "label": r.label} for r in meta.itertuples()], [batch.prefix]
    )
    save_manifest(store, manifest)
    return manifest.id, batch


def _images(store: Any, objects: list[dict[str, Any]], loaded: Any) -> tuple[Any, Any]:
    import numpy as np

    from andon.imaging import model_input

    images = np.stack([model_input(store.get(o["key"]), loaded.size, loaded.transform) for o in objects])
    labels = np.array([loaded.classes.index(o["label"]) for o in objects])
    return images, labels


def _objects(store: Any, batch: Any) -> list[dict[str, Any]]:
    from andon.data.batches import parquet_to_frame

    meta = parquet_to_frame(store.get(batch.metadata_key))
    return [{"key": r.image_key, "label": r.label} for r in meta.itertuples()]


def bare_forward(rec: Recorder, runners: dict[str, Any], images: Any) -> dict[str, float]:
    best = dict.fromkeys(runners, 0.0)
    x = images[:64]
    for r in runners.values():
        r.run(x)  # warm: first-call allocations, OpenVINO's shape compile
    for _ in range(5):
        for name, r in runners.items():
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < 1.0:
                r.run(x)
                n += len(x)
            best[name] = max(best[name], n / (time.perf_counter() - t0))
    for name, rate in best.items():
        rec.figure(f"bare_forward_{name}_parts_per_s", rate, "parts/s", batch=64)
    fastest = max(best, key=lambda k: best[k])
    rec.figure("fastest_runtime_vs_torch_folded_ratio", best[fastest] / best["torch"], "ratio", ">= 4", runtime=fastest)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--parts", type=int, default=4000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--train-parts", type=int, default=800)
    parser.add_argument("--service-keys", help=argparse.SUPPRESS)  # the child that measures the service
    args = parser.parse_args()
    if args.service_keys:
        service_figures(args.service_keys)
        return
    isolated_home()

    import torch

    from andon.config import load_plant
    from andon.lifecycle.promotion import promote
    from andon.lifecycle.registry import version_info
    from andon.models import optimize_for_inference, runtimes
    from andon.scoring.batch import Champion, score_batch
    from andon.storage import open_store
    from andon.training.evaluate import classification_metrics
    from andon.training.run import load_run, train_plant

    rec = Recorder("inference")
    store = open_store()
    casting = load_plant("plant-a")
    train_id, _, _ = casting_manifest(store, casting, "train", 600, 1)
    _, golden, _ = casting_manifest(store, casting, "test", 715, 2)
    for seed in range(args.seeds):
        recipe = casting.recipe.with_overrides({
            "training": {"epochs": 6, "batch_size": 32, "seed": seed},
            "inference": {"quantize": True, "runtimes": [*RUNTIMES[1:], "torch"]},
        })  # fmt: skip
        out = train_plant(store, casting, [train_id], recipe=recipe)
        loaded = load_run(out.run_id)
        images, labels = _images(store, golden, loaded)
        threshold = loaded.operating_point.threshold
        ref = classification_metrics(loaded.predict(images)[0], labels, loaded.classes, threshold)
        for name in RUNTIMES[1:]:
            m = classification_metrics(
                loaded.predict(images, loaded.runner(name))[0], labels, loaded.classes,
                loaded.operating_point.threshold,
            )  # fmt: skip
            moved = max(abs(m["escape_rate"] - ref["escape_rate"]), abs(m["overkill_rate"] - ref["overkill_rate"]))
            rec.figure(
                f"golden_rate_change_{name}_points", 100 * moved, "points", "<= 0.5" if "int8" in name else None,
                seed=seed, escape=round(m["escape_rate"], 4), overkill=round(m["overkill_rate"], 4),
                torch_escape=round(ref["escape_rate"], 4), torch_overkill=round(ref["overkill_rate"], 4),
                defects=int(ref["defects"]), goods=int(ref["goods"]),
            )  # fmt: skip

    # the plant-b champion (small_cnn, 128 px synthetic parts) for speed: accuracy does not change it
    base = load_plant("plant-b")
    recipe = base.recipe.with_overrides({"inference": {"quantize": True}})
    serve_cfg = base.model_copy(update={"recipe": recipe})
    manifest, _ = _dataset(store, serve_cfg, args.train_parts, seed=1, day=3)
    out = train_plant(store, serve_cfg, [manifest], recipe=recipe)
    loaded = load_run(out.run_id)
    _, speed_batch = _dataset(store, serve_cfg, 64, seed=9, day=4)
    images, _ = _images(store, _objects(store, speed_batch), loaded)

    torch.set_num_threads(2)
    runners = {"torch": runtimes.TorchRunner(optimize_for_inference(loaded.model))}
    runners.update({name: loaded.runner(name) for name in RUNTIMES[1:]})
    bare = bare_forward(rec, runners, images)

    # serve and score with the plant's own preference order, as the gate verified it
    promote(store, serve_cfg, force=True, reason="benchmark")
    champion = Champion.load(serve_cfg)
    checked = version_info(out.model_name, out.version or 0).tags.get(runtimes.CHECKED_TAG, "")
    print(f"# serving runtime: {champion.runtime}; the gate measured: {checked}")
    _, batch = _dataset(store, serve_cfg, args.parts, seed=77, day=5)
    score_batch(store, serve_cfg, batch.prefix, explain=False)  # warm
    best = 0.0
    for _ in range(3):
        s = score_batch(store, serve_cfg, batch.prefix, explain=False)
        best = max(best, s.scored / s.seconds)
    rec.figure(
        "score_batch_end_to_end_parts_per_s", best, "parts/s", ">= 2000", runtime=champion.runtime,
        parts=s.scored, note="best of 3: fetch, image checks, decode, predict, uncertainty, drift features, log write",
    )  # fmt: skip
    rec.figure(
        "score_batch_vs_runtime_bare_forward_ratio", best / bare[champion.runtime], "ratio", ">= 0.8",
        runtime=champion.runtime,
    )  # fmt: skip
    rec.figure("score_batch_vs_torch_folded_bare_forward_ratio", best / bare["torch"], "ratio")
    service_in_a_fresh_process(rec, [o.key for o in store.list(f"{batch.prefix}/images/")][:400])
    evidence_on_s3(rec, store.get(next(iter(store.list(f"{batch.prefix}/images/"))).key))
    rec.save()


def service_in_a_fresh_process(rec: Recorder, keys: list[str]) -> None:
    """The service's figures, measured from a child interpreter that holds nothing else (same
    ANDON_HOME and registry): as the client, this process, with six runtimes and the training
    data loaded, measured 7 % (one process) and 24 % (two) fewer parts/s with wrk, once."""
    import json
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        listing = Path(tmp) / "keys.json"
        listing.write_text(json.dumps(keys))
        out = subprocess.run(
            [sys.executable, __file__, "--service-keys", str(listing)], capture_output=True, text=True, timeout=1800
        )
    if out.returncode != 0:
        raise SystemExit(f"the service benchmark failed:\n{out.stderr[-3000:]}")
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            rec.figure(row.pop("figure"), row.pop("value"), row.pop("unit"), row.pop("target", None), **row)
        elif line.startswith("#"):
            print(line)


def service_figures(keys_file: str) -> None:
    """The child of :func:`service_in_a_fresh_process`: one process, then two (printed only)."""
    import json
    from pathlib import Path

    from andon.storage import open_store

    keys = json.loads(Path(keys_file).read_text())
    rec, store = Recorder("inference-service"), open_store()
    one = service(rec, store, keys, processes=1)
    two = service(rec, store, keys, processes=2)
    if one and two:
        rec.figure("service_2_processes_vs_1_ratio_wrk", two / one, "ratio", note="20 connections, wrk, same run")


def service(rec: Recorder, store: Any, keys: list[str], processes: int) -> float | None:
    """`andon serve --processes N` as its own process tree; the clients here, on loopback (they
    share the 2 cores). Returns wrk's parts/s (None without wrk)."""
    import os
    import subprocess
    import sys
    import threading
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    import httpx

    pngs = [store.get(k) for k in keys]
    port = 18_500 + os.getpid() % 1000 + processes
    tag = "" if processes == 1 else f"_{processes}_processes"
    exe = Path(sys.executable).parent / "andon"
    proc = subprocess.Popen(
        [str(exe), "serve", "--plant", "plant-b", "--port", str(port), "--no-explain", "--processes", str(processes)],
        env={**os.environ, "MLFLOW_TRACKING_URI": os.environ["ANDON_MLFLOW_TRACKING_URI"]},
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    local = threading.local()

    def client() -> httpx.Client:
        if getattr(local, "c", None) is None:
            local.c = httpx.Client(base_url=url, timeout=30)
        c: httpx.Client = local.c
        return c

    inside: list[float] = []  # the service's own latency_ms of each answered request

    def post(i: int) -> float:
        t = time.perf_counter()
        r = client().post(
            "/v1/score", params={"part_id": f"b{tag}-{i}", "line": f"line-{1 + i % 2}"}, content=pngs[i % len(pngs)],
            headers={"content-type": "image/png"},
        )  # fmt: skip
        assert r.status_code in (200, 429), r.text
        if r.status_code != 200:
            return float("nan")
        inside.append(r.json()["latency_ms"])
        return (time.perf_counter() - t) * 1000

    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("andon serve did not come up")
            time.sleep(0.2)
        with ThreadPoolExecutor(max_workers=20) as pool:
            list(pool.map(post, range(-200, 0)))  # warm every client's connection
            n = 3000
            t0 = time.perf_counter()
            lat = list(pool.map(post, range(n)))
            wall = time.perf_counter() - t0
        ok = [v for v in lat if v == v]
        rate_ok = len(ok) / wall
        rec.figure(
            f"service{tag}_parts_per_s_20_clients", rate_ok, "parts/s", ">= 600", requests=n, refused=n - len(ok)
        )
        rec.figure(f"service{tag}_p50_ms_20_clients", _pct(ok, 50), "ms")
        rec.figure(f"service{tag}_p99_ms_20_clients", _pct(ok, 99), "ms", "<= 50")

        wrk_rate = wrk_figures(rec, url, pngs, tag)

        lines, rate, seconds = 20, 10.0, 20
        inside.clear()
        start = time.perf_counter() + 0.5

        def one_line(line: int) -> list[float]:
            out = []
            for k in range(int(rate * seconds)):
                time.sleep(max(0.0, start + line / (lines * rate) + k / rate - time.perf_counter()))
                out.append(post(100_000 + line * 10_000 + k))
            return out

        with ThreadPoolExecutor(max_workers=lines) as pool:
            paced = [v for vs in pool.map(one_line, range(lines)) for v in vs]
        ok = [v for v in paced if v == v]
        rec.figure(
            f"service{tag}_p99_ms_20_lines_at_10_parts_per_s", _pct(ok, 99), "ms", "<= 30", requests=len(paced),
            refused=len(paced) - len(ok), p50=round(_pct(ok, 50), 2), note="client-side, Python threads",
        )  # fmt: skip
        rec.figure(
            f"service{tag}_p99_ms_20_lines_inside_the_service", _pct(inside, 99), "ms", "<= 30",
            p50=round(_pct(inside, 50), 2), note="the service's own latency_ms: decode, checks, batch, predict",
        )  # fmt: skip
        health = httpx.get(f"{url}/healthz").json()
        rec.figure(f"service{tag}_mean_batch", float(health["mean_batch"]), "images", runtime=health["runtime"])
        rec.figure(f"service{tag}_background_errors", len(health["background_errors"]), "count", "0")
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return wrk_rate


def evidence_on_s3(rec: Recorder, png: bytes, parts: int = 400) -> None:
    """What the service's background stores per second (each part: its evidence image, one
    conditional PUT, then its row) on S3 over HTTP: moto's server in its own process, with nothing
    added and with 5 ms added to every call (a round trip to a store on another machine), one
    store thread (before) against ``STORE_THREADS``. moto is itself a Python server on these 2 cores:
    a real store answers faster, and the ratio grows with the round trip."""
    import os
    import subprocess
    import sys
    import threading
    import uuid
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    import httpx

    from andon.config import load_plant
    from andon.scoring.online import STORE_THREADS, ScoringService, _Job
    from andon.storage import S3ObjectStore

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "benchmark")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "benchmark")
    port = 19_500 + os.getpid() % 400
    moto = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"

    class RoundTrip:
        """The store, each call ``delay`` seconds later (a network's round trip)."""

        def __init__(self, inner: Any, delay: float) -> None:
            self.inner, self.delay = inner, delay

        def __getattr__(self, name: str) -> Any:
            attr = getattr(self.inner, name)
            if name not in ("put", "put_new", "get", "exists"):
                return attr

            def call(*args: Any, **kwargs: Any) -> Any:
                time.sleep(self.delay)
                return attr(*args, **kwargs)

            return call

    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(endpoint)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        cfg = load_plant("plant-b")
        for delay in (0.0, 0.005):
            rates = {}
            for threads in (1, STORE_THREADS):
                s3 = S3ObjectStore(f"bench-{uuid.uuid4().hex[:8]}", endpoint_url=endpoint)
                s3.ensure_bucket()
                target = RoundTrip(s3, delay) if delay else s3
                service = ScoringService(target, cfg, explain=False, store_threads=threads)
                scored = datetime(2026, 11, 5, 8, tzinfo=UTC)
                for i in range(parts):
                    key = f"plant-b/line-1/online/2026-11-05/e{i}.png"
                    row = {
                        "part_id": f"e{i}", "line": "line-1", "scored_at": scored, "model_name": "plant-b.model",
                        "model_version": 1, "predicted_class": "ok", "probabilities": [0.9, 0.1], "object_key": key,
                    }  # fmt: skip
                    service._enqueue(_Job(row, upload=(key, png, "image/png")))
                service._store_pool = ThreadPoolExecutor(threads)  # the worker alone, no champion to load
                t0 = time.perf_counter()
                worker = threading.Thread(target=service._work, daemon=True)
                worker.start()
                while service.health()["queue"]:
                    time.sleep(0.005)
                rates[threads] = parts / (time.perf_counter() - t0)
                service._stop.set()
                worker.join(30)
                service._store_pool.shutdown()
                rec.figure(
                    f"evidence_stored_per_s_s3_{threads}_threads_{int(delay * 1000)}ms_added", rates[threads],
                    "parts/s", parts=parts, note="moto_server in its own process; conditional PUT of the image + row",
                )  # fmt: skip
            rec.figure(
                f"evidence_stored_{STORE_THREADS}_vs_1_thread_ratio_{int(delay * 1000)}ms_added",
                rates[STORE_THREADS] / rates[1], "ratio",
            )  # fmt: skip
    finally:
        moto.terminate()
        moto.wait(30)


WRK_SCRIPT = """
local bodies, counter, threads = {}, 0, 0
local rate, interval, nextt = %(rate)f, 0, nil  -- rate > 0: that many requests a second in all
local ffi = require("ffi")  -- wrk runs LuaJIT: a millisecond clock for pacing
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } andon_timespec;
int clock_gettime(int clk_id, andon_timespec *tp);
]]
local ts = ffi.new("andon_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end
function setup(thread)  -- each wrk thread its own id: part ids never repeat across threads
  threads = threads + 1
  thread:set("tid", threads)
end
function init(args)
  for i = 0, %(n)d - 1 do
    local f = io.open(string.format("%(dir)s/%%04d.png", i), "rb")
    bodies[i + 1] = f:read("*all")
    f:close()
  end
  if rate > 0 then interval = 1000.0 / (rate / %(threads)d) end
end
if rate > 0 then
  function delay()  -- the next request at its slot of a fixed schedule (at once when late)
    local t = now_ms()
    if nextt == nil then nextt = t + (tid - 1) * interval / %(threads)d end
    nextt = nextt + interval
    return math.max(0, nextt - t)
  end
end
function request()
  counter = counter + 1
  local path = string.format("/v1/score?part_id=%(prefix)s-%%d-%%d&line=line-%%d", tid, counter, 1 + counter %% 2)
  return wrk.format("POST", path, {["content-type"] = "image/png"}, bodies[(counter %% %(n)d) + 1])
end
function done(summary, latency, requests)
  io.write(string.format("JSON {\\"requests\\": %%d, \\"non_2xx\\": %%d, \\"p50_ms\\": %%.3f, \\"p99_ms\\": %%.3f, " ..
    "\\"seconds\\": %%.3f}\\n", summary.requests, summary.errors.status, latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, summary.duration / 1e6))
end
"""


def run_wrk(
    url: str, pngs: list[bytes], prefix: str, connections: int, seconds: int, rate: float = 0.0
) -> dict[str, Any] | None:
    """``wrk`` (C, a few percent of a core) with ``connections`` connections for ``seconds`` after
    a 5 s warm-up, each request a new part; ``rate`` > 0: paced to that many requests a second in
    all (each connection waits for its slot; latency is from the send, so a late schedule is not
    added). None, and said so, where wrk is not installed."""
    import json
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    exe = shutil.which("wrk")
    if exe is None:
        print("# wrk not installed (apt-get install wrk): the service's figures are the Python clients' only")
        return None
    threads = 2
    with tempfile.TemporaryDirectory() as tmp:
        for i, data in enumerate(pngs):
            (Path(tmp) / f"{i:04d}.png").write_bytes(data)
        script = Path(tmp) / "post.lua"
        out = ""
        for run, duration in enumerate((5, seconds)):  # warm-up, then the measured run: new part ids each
            script.write_text(
                WRK_SCRIPT % {"n": len(pngs), "dir": tmp, "prefix": f"{prefix}-{run}", "rate": rate, "threads": threads}
            )
            cmd = [exe, f"-t{threads}", f"-c{connections}", f"-d{duration}s", "-s", str(script), url]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120).stdout
    result: dict[str, Any] = json.loads(out.split("JSON ", 1)[1].splitlines()[0])
    result["rate"] = (result["requests"] - result["non_2xx"]) / result["seconds"]
    return result


def wrk_figures(rec: Recorder, url: str, pngs: list[bytes], tag: str) -> float | None:
    """20 connections from ``wrk`` as fast as the service answers (15 s), then paced: 20
    connections at 600 parts/s in all (the issue's rate), and 20 lines at 10 parts/s each."""
    result = run_wrk(url, pngs, f"w{tag}", 20, 15)
    if result is None:
        return None
    rec.figure(
        f"service{tag}_parts_per_s_20_connections_wrk", result["rate"], "parts/s", ">= 600",
        requests=result["requests"], non_2xx=result["non_2xx"],
        note="wrk -t2 -c20 -d15s, as fast as answered; C load generator on the same 2 cores",
    )  # fmt: skip
    rec.figure(f"service{tag}_p50_ms_20_connections_wrk", result["p50_ms"], "ms")
    rec.figure(f"service{tag}_p99_ms_20_connections_wrk", result["p99_ms"], "ms", "<= 50", note="at saturation")
    for name, rate, target in (
        ("20_connections_at_600_parts_per_s", 600.0, "<= 50"),
        ("20_lines_at_10_parts_per_s", 200.0, "<= 30"),
    ):
        paced = run_wrk(url, pngs, f"p{tag}{int(rate)}", 20, 15, rate)
        assert paced is not None
        rec.figure(
            f"service{tag}_p99_ms_{name}_wrk", paced["p99_ms"], "ms", target, p50=round(paced["p50_ms"], 2),
            achieved_parts_per_s=round(paced["rate"], 1), non_2xx=paced["non_2xx"],
            note=f"wrk paced to {rate:.0f} requests/s in all, 20 connections",
        )  # fmt: skip
    return float(result["rate"])


if __name__ == "__main__":
    main()
