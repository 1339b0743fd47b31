"""The doors under abuse (issue 16), side by side with the clean path, in one run:

1. ``andon serve`` (its own process, the real CLI, a registered champion: small_cnn trained one
   epoch on 400 synthetic plant-b parts, as benchmarks/scoring.py does) answering valid image
   requests from 4 clients at a steady 20 parts/s: first clean, then while an attacker process
   holds 1,000 stalled connections (half-sent request headers; each one the server closes is
   opened again at once) and keeps 10 decompression bombs in flight (PNGs of a few hundred KB
   that declare 13000 x 13000 and 20000 x 20000 pixels, each posted again as soon as it is
   answered). Figures: valid success and p50 / p99 in both phases, the abuse p99 over the clean
   p99 (and, to tell which fault costs what, the p99 under each fault alone), the service
   process's RSS growth (its /proc/<pid>/status, sampled every 0.1 s, and its
   high-water mark), what the attacker achieved, and the server's fd limit and connection cap.
2. The MES gateway (in-process, as benchmarks/gateway.py runs it, with its SQLite outbox, its
   forwarder and its MQTT bridge on the local Mosquitto) in front of a real ``prefect server``
   on PostgreSQL (``--prefect-db sqlite`` for SQLite): signed events posted by 4 clients, clean,
   then under each fault: (a) 1,000 stalled connections, (b) poison MQTT messages (deep JSON,
   year 1 at +14:00, a NUL) published between valid MQTT messages, (c) NUL and lone-surrogate
   events written straight into the outbox between valid ones (what an older gateway let in).
   Lost = acknowledged (HTTP 202, or the broker's PUBACK for MQTT) and not in the Prefect
   server's event store once the outbox has drained, counted on the server by event id.

The attacker runs in its own process (this file with ``--attack``), so its threads do not share
the measuring client's interpreter lock; all three processes share the machine's cores.

Run: .venv/bin/python benchmarks/abuse.py [--requests 400] [--events 600] [--prefect-db postgres]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from _common import Recorder, free_port, isolated_home, kill

SECRET = "abuse-bench-secret-of-at-least-32-bytes"
HERE = Path(__file__).resolve()
BOMB_SIDES = (13_000, 20_000)  # 169 M and 400 M pixels (Pillow itself refuses 400 M as a bomb)


# ------------------------------------------------------------------------------ the attacker


def bomb_png(side: int) -> bytes:
    """A real grey 8-bit PNG of ``side`` x ``side`` zero pixels (decodes to ``side**2`` bytes)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    comp = zlib.compressobj(9)
    row = b"\0" * (side + 1)  # filter byte + pixels
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def attack(port: int, path: str, stalled: int, bombs: int) -> None:
    """Hold ``stalled`` half-sent requests open against 127.0.0.1:``port`` (re-opening each one
    the server closes) and keep ``bombs`` bomb uploads in flight, until stdin closes; then print
    what happened as one JSON line."""
    import selectors
    import socket

    import httpx

    _raise_fd_limit(stalled + 512)
    half = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le".encode()
    sel = selectors.DefaultSelector()
    stats: Counter[str] = Counter()
    opened_at: dict[int, float] = {}
    held: list[float] = []

    def open_one() -> None:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(half)
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
            opened_at[s.fileno()] = time.monotonic()
            stats["opened"] += 1
        except OSError as exc:
            stats[f"open_failed_{type(exc).__name__}"] += 1

    for _ in range(stalled):
        open_one()
    stop = threading.Event()
    bodies = [bomb_png(BOMB_SIDES[i % len(BOMB_SIDES)]) for i in range(min(bombs, len(BOMB_SIDES)))]
    bomb_codes: Counter[str] = Counter()
    lock = threading.Lock()

    def bomber(i: int) -> None:
        body = bodies[i % len(bodies)]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            while not stop.is_set():
                try:
                    code = str(http.post(path, content=body, headers={"content-type": "image/png"}).status_code)
                except httpx.HTTPError as exc:
                    code = type(exc).__name__
                with lock:
                    bomb_codes[code] += 1

    threads = [threading.Thread(target=bomber, args=(i,), daemon=True) for i in range(bombs)]
    for t in threads:
        t.start()
    print(json.dumps({"ready": stats["opened"], "bomb_bytes": [len(b) for b in bodies]}), flush=True)

    def until_stdin_closes() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=until_stdin_closes, daemon=True).start()
    t0 = time.monotonic()
    low = stalled
    while not stop.is_set():
        for key, _ in sel.select(timeout=0.2):
            s: Any = key.fileobj
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if data:
                stats["answered"] += 1  # e.g. an error status before the close: read on to the close
                continue
            held.append(time.monotonic() - opened_at.pop(s.fileno(), t0))
            sel.unregister(s)
            s.close()
            stats["closed_by_server"] += 1
            open_one()
        low = min(low, len(sel.get_map()))
    stop.set()
    for t in threads:
        t.join(timeout=60)
    held.sort()
    out = {
        **stats,
        "seconds": round(time.monotonic() - t0, 1),
        "open_at_end": len(sel.get_map()),
        "fewest_open": low,
        "held_s_p50": round(held[len(held) // 2], 2) if held else None,
        "held_s_max": round(held[-1], 2) if held else None,
        "bombs": dict(bomb_codes),
    }
    print(json.dumps(out), flush=True)


def _raise_fd_limit(want: int) -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        soft = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft, hard


class Attacker:
    """This file with ``--attack`` in a subprocess; ``stop()`` returns its report."""

    def __init__(self, port: int, path: str, stalled: int, bombs: int) -> None:
        cmd = [sys.executable, str(HERE), "--attack", str(port), "--path", path]
        cmd += ["--stalled", str(stalled), "--bombs", str(bombs)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.ready = json.loads(self.proc.stdout.readline() or "{}")
        if "ready" not in self.ready:
            self.proc.kill()
            raise SystemExit("the attacker did not start")

    def stop(self) -> dict[str, Any]:
        out, _ = self.proc.communicate(timeout=120)
        return dict(json.loads(out.strip().splitlines()[-1]))


# ------------------------------------------------------------------------------ helpers


def _pct(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q)) if values else float("nan")


def _proc_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _fd_limit(pid: int) -> str:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return f"{soft}/{hard}"
    return "?"


class RssSampler:
    """The peak RSS of process ``pid`` while running (every 0.1 s, plus its VmHWM)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.peak_kb = max(self.peak_kb, _proc_kb(self.pid, "VmRSS"))

    def __enter__(self) -> RssSampler:
        self.before_kb = _proc_kb(self.pid, "VmRSS")
        self.hwm_before_kb = _proc_kb(self.pid, "VmHWM")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        hwm = _proc_kb(self.pid, "VmHWM")
        if hwm > self.hwm_before_kb:  # a new high-water mark was set during the phase
            self.peak_kb = max(self.peak_kb, hwm)

    @property
    def growth_mb(self) -> float:
        return max(0, self.peak_kb - self.before_kb) / 1024


def paced_load(n: int, clients: int, rate: float, send: Any) -> tuple[list[float], Counter[str]]:
    """``n`` calls of ``send(i, http) -> status`` from ``clients`` threads at ``rate`` calls/s in
    all; (latencies in ms of every call, outcomes by status or exception name)."""
    import httpx

    lat: list[float] = []
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def client(k: int) -> None:
        interval = clients / rate
        with httpx.Client(timeout=60) as http:
            nxt = time.perf_counter() + k * interval / clients
            for i in range(k, n, clients):
                time.sleep(max(0.0, nxt - time.perf_counter()))
                nxt += interval
                t = time.perf_counter()
                try:
                    outcome = str(send(i, http))
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                ms = (time.perf_counter() - t) * 1000
                with lock:
                    lat.append(ms)
                    outcomes[outcome] += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat, outcomes


# ------------------------------------------------------------------------------ 1. andon serve


def scoring_figures(rec: Recorder, args: argparse.Namespace) -> None:
    from datetime import UTC, datetime

    from andon.config import load_plant
    from andon.data.batches import parquet_to_frame
    from andon.data.datasets import build_manifest, save_manifest
    from andon.lifecycle.promotion import promote
    from andon.storage import open_store
    from andon.synth.plant import synthesize_plant
    from andon.training.run import train_plant

    cfg = load_plant("plant-b")
    store = open_store()
    t0 = time.perf_counter()
    (train,) = synthesize_plant(cfg, store, 400, seed=1, defect_rate=0.3, lines=["line-1"],
                                start=datetime(2026, 11, 1, tzinfo=UTC), batch_size=10_000)  # fmt: skip
    meta = parquet_to_frame(store.get(train.metadata_key))
    objects = [{"key": r.image_key, "sha256": r.sha256, "label": r.label} for r in meta.itertuples()]
    manifest = build_manifest(cfg.id, objects, [train.prefix])
    save_manifest(store, manifest)
    recipe = cfg.recipe.model_copy(update={"training": cfg.recipe.training.model_copy(update={"epochs": 1})})
    train_plant(store, cfg, [manifest.id], recipe=recipe)
    promote(store, cfg, force=True, reason="benchmark")
    (parts,) = synthesize_plant(cfg, store, 200, seed=2, lines=["line-1"], batch_size=10_000,
                                start=datetime(2026, 11, 2, tzinfo=UTC))  # fmt: skip
    pngs = [store.get(o.key) for o in store.list(f"{parts.prefix}/images/")]
    print(f"# champion trained and registered in {time.perf_counter() - t0:.0f} s", file=sys.stderr)

    import httpx

    port = free_port()
    log_path = Path(os.environ["ANDON_HOME"]) / "serve.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "andon"), "serve", "--plant", "plant-b", "--port", str(port)],
            env={**os.environ, "MLFLOW_TRACKING_URI": os.environ["ANDON_MLFLOW_TRACKING_URI"]},
            stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"andon serve did not come up:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        phase = {"n": 0}

        def send(i: int, http: Any) -> int:
            r = http.post(f"{url}/v1/score", params={"part_id": f"p{phase['n']}-{i}"},
                          content=pngs[i % len(pngs)], headers={"content-type": "image/png"})  # fmt: skip
            return int(r.status_code)

        rate, clients, n = args.rate, 4, args.requests
        phase["n"] = 0
        paced_load(40, clients, rate, send)  # warm
        phase["n"] = 1
        clean_lat, clean = paced_load(n, clients, rate, send)
        log_before = log_path.stat().st_size
        attacker = Attacker(port, "/v1/score", args.stalled, args.bombs)
        time.sleep(2.0)  # the bombs are flying and the stalled sockets are settled before we measure
        with RssSampler(proc.pid) as rss:
            phase["n"] = 2
            abuse_lat, abused = paced_load(n, clients, rate, send)
            queued = httpx.get(f"{url}/healthz", timeout=30).json()["queue"]
            report = attacker.stop()
        singles: dict[str, tuple[list[float], Counter[str], dict[str, Any]]] = {}
        for i, (name, stalled, bombs) in enumerate((("stalled_only", args.stalled, 0), ("bombs_only", 0, args.bombs))):
            single = Attacker(port, "/v1/score", stalled, bombs)
            time.sleep(2.0)
            phase["n"] = 3 + i
            lat, outcomes = paced_load(n, clients, rate, send)
            singles[name] = (lat, outcomes, single.stop())
        health = httpx.get(f"{url}/healthz", timeout=30).json()
        log_text = log_path.read_bytes()[log_before:].decode(errors="replace")
        fd_limit = _fd_limit(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            kill(proc)

    from andon.httpkit import ServerLimits

    limits = ServerLimits()
    soft = int(fd_limit.split("/")[0]) if fd_limit.split("/")[0].isdigit() else 0
    cap = min(limits.max_connections, soft - 64) if soft else limits.max_connections
    ok_clean = 100 * clean["200"] / n
    ok_abuse = 100 * abused["200"] / n
    p99_clean, p99_abuse = _pct(clean_lat, 99), _pct(abuse_lat, 99)
    load = f"{n} valid 128 px PNGs, 4 clients, {rate:g} parts/s in all"
    rec.figure("serve_clean_valid_success", ok_clean, "%", "100 %", outcomes=dict(clean), load=load)
    rec.figure("serve_clean_p50_ms", _pct(clean_lat, 50), "ms")
    rec.figure("serve_clean_p99_ms", p99_clean, "ms")
    rec.figure("serve_abuse_valid_success", ok_abuse, "%", "100 %", outcomes=dict(abused), load=load)
    rec.figure("serve_abuse_p50_ms", _pct(abuse_lat, 50), "ms")
    rec.figure("serve_abuse_p99_ms", p99_abuse, "ms")
    rec.figure("serve_abuse_vs_clean_p99_ratio", p99_abuse / p99_clean, "ratio", "<= 3")
    rec.figure(
        "serve_rss_growth_under_abuse_mb", rss.growth_mb, "MB", "<= 300",
        rss_before_mb=round(rss.before_kb / 1024, 1), rss_peak_mb=round(rss.peak_kb / 1024, 1),
        background_queue_at_end=queued,
        note="the service's background queue (evidence to store, log rows) at the end of the abuse phase",
    )  # fmt: skip
    rec.figure(
        "serve_attack_held", report.get("fewest_open", 0), "connections",
        note=f"stalled connections (half-sent headers) the attacker held open at the fewest; {args.stalled} asked",
        attacker=report, bomb_png_bytes=attacker.ready.get("bomb_bytes"),
        server_fd_limit=fd_limit, server_connection_cap=cap,
        header_timeout_s=limits.header_timeout_s,
    )  # fmt: skip
    for name, (lat, outcomes, alone) in singles.items():
        rec.figure(
            f"serve_{name}_p99_ms", _pct(lat, 99), "ms",
            note="one fault alone, to tell which one costs the valid requests their latency",
            ratio_to_clean=round(_pct(lat, 99) / p99_clean, 2), p50_ms=round(_pct(lat, 50), 1),
            success_pct=round(100 * outcomes["200"] / n, 2), outcomes=dict(outcomes),
            bombs_per_s=round(sum(alone["bombs"].values()) / alone["seconds"], 1) if alone["bombs"] else 0,
        )  # fmt: skip
    bombs_sent = sum(report["bombs"].values())
    rec.figure(
        "serve_bomb_uploads_per_s", bombs_sent / report["seconds"], "requests/s",
        note=f"{args.bombs} bomb uploads kept in flight (each posted again as soon as it was answered)",
    )  # fmt: skip
    rec.figure(
        "serve_bombs_refused", health["rejected_by_reason"].get("bad_image", 0), "requests",
        rejected_by_reason=health["rejected_by_reason"], background_errors=len(health["background_errors"]),
        log_status=health["status"],
    )  # fmt: skip
    rec.figure(
        "serve_log_tracebacks_under_abuse", log_text.count("Traceback"), "count", "0",
        log_lines=log_text.count("\n"), log_kb=round(len(log_text) / 1024, 1),
    )  # fmt: skip


# ------------------------------------------------------------------------------ 2. the MES gateway


def start_prefect(home: Path, port: int, db_url: str) -> Any:
    """A real ``prefect server start`` on ``db_url`` (see _common.start_prefect_server)."""
    import httpx

    env = os.environ | {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_DATABASE_CONNECTION_URL": db_url,
        "PREFECT_SERVER_UI_ENABLED": "false",
    }
    exe = str(Path(sys.executable).with_name("prefect"))
    log = (home / "server.log").open("wb")
    proc = subprocess.Popen([exe, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.25)
    kill(proc)
    raise SystemExit(f"the Prefect server did not start:\n{(home / 'server.log').read_text()[-3000:]}")


def postgres_database() -> tuple[str, Any]:
    """A fresh database on the local PostgreSQL: (asyncpg URL for Prefect, a dropper)."""
    import psycopg2

    base = os.environ.get("ANDON_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"andon_bench_abuse_{uuid.uuid4().hex[:8]}"
    conn = psycopg2.connect(base)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()

    url = base.rsplit("/", 1)[0] + f"/{name}"
    return "postgresql+asyncpg://" + url.removeprefix("postgresql://"), drop


_DEEP = b"[" * 100_000 + b"]" * 100_000


def gateway_figures(rec: Recorder, args: argparse.Namespace, tmp: Path) -> None:
    import httpx
    import paho.mqtt.client as mqtt

    from andon.config import load_plant
    from andon.gateway.app import Gateway, create_app
    from andon.gateway.forwarder import Forwarder
    from andon.gateway.mqtt import MqttBridge, topic_prefix
    from andon.gateway.outbox import Outbox
    from andon.gateway.schemas import parse_message, to_event
    from andon.gateway.signing import headers
    from andon.httpkit import ServerLimits, run_in_thread

    home = tmp / "prefect"
    home.mkdir()
    drop = None
    if args.prefect_db == "postgres":
        db_url, drop = postgres_database()
    else:
        db_url = f"sqlite+aiosqlite:///{home / 'prefect.db'}"
    port = free_port()
    t0 = time.perf_counter()
    server = start_prefect(home, port, db_url)
    print(f"# Prefect server ({args.prefect_db}) up in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    api = f"http://127.0.0.1:{port}/api"
    plants = {p: load_plant(p) for p in ("plant-a", "plant-b")}
    box = Outbox(f"sqlite:///{tmp / 'outbox.db'}")
    forwarder = Forwarder(box, api, resend_after=20.0)
    gw = Gateway(box, plants, SECRET, forwarder)
    forwarder.start()
    bridge = MqttBridge(gw, "mqtt://127.0.0.1:1883", client_id=f"andon-bench-abuse-{uuid.uuid4().hex[:8]}")
    bridge.start()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"andon-bench-poisoner-{uuid.uuid4().hex[:6]}")
    pub.connect("127.0.0.1", 1883)
    pub.loop_start()
    topic = f"{topic_prefix(plants['plant-b'])}/line-1/sku"

    def message(tag: str, i: int, plant: str = "plant-a", **extra: Any) -> dict[str, Any]:
        return {"type": "sku.introduced", "message_id": f"abuse-{tag}-{i}-{uuid.uuid4().hex[:8]}", "plant": plant,
                "line": "line-1", "occurred_at": "2026-11-26T08:00:00Z", "sku": f"SKU-{i}"} | extra  # fmt: skip

    def event_id(msg: dict[str, Any]) -> str:
        return str(to_event(parse_message(msg), plants[msg["plant"]])["id"])

    acked: dict[str, list[str]] = {}  # phase -> event ids the sender was told are stored
    lat_by_phase: dict[str, list[float]] = {}
    outcomes_by_phase: dict[str, Counter[str]] = {}
    extras: dict[str, dict[str, Any]] = {}

    with run_in_thread(create_app(gw), name="andon-gateway") as url:
        gw_port = int(url.rsplit(":", 1)[1])

        def run_phase(phase: str, during: Any = None) -> None:
            msgs = [message(phase, i) for i in range(args.events)]
            ids: list[str] = []
            lock = threading.Lock()

            def send(i: int, http: Any) -> int:
                body = json.dumps(msgs[i]).encode()
                r = http.post(f"{url}/v1/mes/events", content=body, headers=headers(body, SECRET))
                if r.status_code == 202:
                    with lock:
                        ids.append(event_id(msgs[i]))
                return int(r.status_code)

            side = threading.Thread(target=during) if during else None
            if side:
                side.start()
            lat, outcomes = paced_load(args.events, 4, args.event_rate, send)
            if side:
                side.join()
            acked[phase] = ids
            lat_by_phase[phase] = lat
            outcomes_by_phase[phase] = outcomes

        run_phase("clean")

        attacker = Attacker(gw_port, "/v1/mes/events", args.stalled, 0)
        time.sleep(2.0)
        run_phase("stalled")
        extras["stalled"] = {"attacker": attacker.stop(), "connection_cap": ServerLimits().connection_cap()}

        poison = [_DEEP, json.dumps(message("p", 0, "plant-b", occurred_at="0001-01-01T00:00:00+14:00")).encode(),
                  json.dumps(message("p", 0, "plant-b", description="nul\u0000")).encode()]  # fmt: skip
        mqtt_ids: list[str] = []
        published = Counter[str]()

        def poison_mqtt() -> None:
            n_valid = args.events // 3
            for i in range(n_valid):
                for p in poison:  # three poison messages before each valid one
                    pub.publish(topic, p, qos=1).wait_for_publish(10)
                    published["poison"] += 1
                msg = message("mqtt", i, "plant-b")
                info = pub.publish(topic, json.dumps(msg), qos=1)
                info.wait_for_publish(10)
                if info.is_published():  # the broker's PUBACK: the MES was told it is taken
                    mqtt_ids.append(event_id(msg))
                time.sleep(args.events / args.event_rate / n_valid / 2)

        refused_before = bridge.refused
        run_phase("mqtt_poison", poison_mqtt)
        deadline = time.monotonic() + 60
        while bridge.received < len(mqtt_ids) and time.monotonic() < deadline:
            time.sleep(0.1)
        acked["mqtt_poison"] += mqtt_ids
        extras["mqtt_poison"] = {"poison_published": published["poison"], "valid_mqtt_acked": len(mqtt_ids),
                                 "mqtt_refused": bridge.refused - refused_before, "mqtt_unstored": bridge.unstored,
                                 "mqtt_received": bridge.received}  # fmt: skip

        injected: list[str] = []

        def poison_outbox() -> None:
            for i in range(args.events // 20):
                nul = to_event(parse_message(message("nul", i)), plants["plant-a"])
                nul["payload"]["description"] = "written by an older gateway\u0000"
                sur = to_event(parse_message(message("sur", i)), plants["plant-a"])
                sur["payload"]["description"] = "half a character: \ud800"
                for e in (nul, sur):
                    box.put(e, "http")
                    injected.append(e["id"])
                time.sleep(args.events / args.event_rate / (args.events // 20))

        run_phase("outbox_poison", poison_outbox)
        extras["outbox_poison"] = {"poison_injected": len(injected)}

        every = [i for ids in acked.values() for i in ids]
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            c = box.counts()
            if c["pending"] == 0:
                break
            time.sleep(0.5)
        forwarder.stop()
        bridge.stop()
        pub.loop_stop()
        pub.disconnect()

    found: set[str] = set()
    since = "2026-01-01T00:00:00Z"
    with httpx.Client(timeout=60) as http:
        for lo in range(0, len(every), 50):
            body = {"filter": {"id": {"id": every[lo : lo + 50]}, "occurred": {"since": since}}, "limit": 50}
            found |= {e["id"] for e in http.post(f"{api}/events/filter", json=body).json()["events"]}
        poison_found = set()
        for lo in range(0, len(injected), 50):
            body = {"filter": {"id": {"id": injected[lo : lo + 50]}, "occurred": {"since": since}}, "limit": 50}
            poison_found |= {e["id"] for e in http.post(f"{api}/events/filter", json=body).json()["events"]}
    kill(server)
    if drop:
        drop()
    dead = box.dead(limit=10_000)
    dead_ids = {d["id"] for d in dead}
    what = {
        "clean": "no fault",
        "stalled": f"{args.stalled} stalled connections (half-sent headers, re-opened when closed)",
        "mqtt_poison": "deep JSON, year 1 at +14:00 and a NUL on MQTT, 3 before each valid MQTT message",
        "outbox_poison": "a NUL and a lone-surrogate event in the outbox every 20 valid events",
    }
    for phase, ids in acked.items():
        lost = [i for i in ids if i not in found]
        extra = {
            "valid_success_pct": round(
                100
                * sum(v for k, v in outcomes_by_phase[phase].items() if k == "202")
                / sum(outcomes_by_phase[phase].values()),
                2,
            ),
            "acknowledged": len(ids),
            "stored": len(ids) - len(lost),
            "valid_parked_dead": len(dead_ids & set(ids)),
            "ack_p99_ms": round(_pct(lat_by_phase[phase], 99), 1),
            "http_outcomes": dict(outcomes_by_phase[phase]),
            **extras.get(phase, {}),
        }
        rec.figure(f"gateway_events_lost_{phase}", len(lost), "events", "0", fault=what[phase], **extra)
    rec.figure(
        "gateway_poison_events_parked", len(dead_ids & set(injected)), "events", f"{len(injected)} (all injected)",
        stored_on_server=len(poison_found),
        reasons=sorted({d["dead_reason"].split(":")[0][:80] for d in dead}),
    )  # fmt: skip
    rec.figure("gateway_prefect_database", 0, "-", note=args.prefect_db, outbox=box.counts(),
               forwarder_failures=forwarder.stats.failures)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=400, help="valid scoring requests per phase")
    parser.add_argument("--rate", type=float, default=20.0, help="valid scoring requests per second, 4 clients")
    parser.add_argument("--events", type=int, default=600, help="valid signed MES events per phase")
    parser.add_argument("--event-rate", type=float, default=50.0)
    parser.add_argument("--stalled", type=int, default=1000)
    parser.add_argument("--bombs", type=int, default=10)
    parser.add_argument("--prefect-db", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--only", choices=("serve", "gateway"), default=None)
    parser.add_argument("--attack", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--path", default="/", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.attack is not None:
        attack(args.attack, args.path, args.stalled, args.bombs)
        return
    soft, hard = _raise_fd_limit(args.stalled * 2 + 1024)  # the attacker and the server inherit it
    print(f"# fd limit {soft}/{hard}", file=sys.stderr)
    tmp = isolated_home()
    os.environ["ANDON_MES_SECRET"] = SECRET
    rec = Recorder("abuse")
    t0 = time.perf_counter()
    if args.only in (None, "serve"):
        scoring_figures(rec, args)
    if args.only in (None, "gateway"):
        gateway_figures(rec, args, tmp)
    rec.figure("run_seconds", time.perf_counter() - t0, "s", "< 480")
    rec.save()


if __name__ == "__main__":
    main()
