"""A prediction log that lasts a year (issue 19), on this machine's disk and on S3 over HTTP (moto):

- the nightly drift read of 24 h (864,000 rows, the monitoring columns) from 86,400 micro-batch
  files (what ``andon serve`` writes: one a second) against the same day compacted (24 files);
- compaction itself: seconds for the day;
- the same read of a day one year old (compacted), and on S3 the compacted day;
- kill -9 during the compaction of a 3,600-file hour: rows lost and duplicated.

Run: .venv/bin/python benchmarks/predlog.py [--files-per-hour 3600] [--rows-per-file 10]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _common import Recorder, isolated_home

DAY = datetime(2026, 11, 20, tzinfo=UTC)
COLUMNS = "part_id, line, scored_at, predicted_class, defect_score, entropy, margin, brightness, contrast, sharpness"


def rows_for(first: int, n: int, at: datetime, step: timedelta) -> list[dict[str, Any]]:
    return [
        {
            "part_id": f"p{first + i:08d}", "line": f"line-{1 + i % 2}", "scored_at": at + i * step,
            "model_name": "plant-z.surface-defects", "model_version": 3, "predicted_class": "ok",
            "probabilities": [0.93, 0.07], "defect_score": 0.07, "threshold": 0.4, "entropy": 0.25, "margin": 0.86,
            "brightness": 120.0, "contrast": 41.0, "sharpness": 310.0, "latency_ms": 4.0, "embedding": [0.1] * 8,
        }
        for i in range(n)
    ]  # fmt: skip


def read_day(log: Any, day: datetime) -> tuple[float, int]:
    t0 = time.perf_counter()
    table = log.query(day, day + timedelta(days=1), columns=COLUMNS).to_arrow_table()
    return time.perf_counter() - t0, table.num_rows


KILLED = """
import sys
from datetime import datetime, timedelta, UTC
from andon.scoring.predlog import PredictionLog
from andon.storage import LocalObjectStore
hour = datetime.fromisoformat(sys.argv[2])
print("start", flush=True)
PredictionLog(LocalObjectStore(sys.argv[1]), "plant-z").compact(before=hour + timedelta(hours=1), after=hour)
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files-per-hour", type=int, default=3600)
    parser.add_argument("--rows-per-file", type=int, default=10)
    args = parser.parse_args()
    tmp = isolated_home()

    from andon.scoring.predlog import COMPACTED, PredictionLog
    from andon.storage import LocalObjectStore

    rec = Recorder("predlog")
    root = tmp / "objects"
    log = PredictionLog(LocalObjectStore(root), "plant-z")
    per_file, files = args.rows_per_file, args.files_per_hour
    step = timedelta(seconds=3600 / (files * per_file))
    t0 = time.perf_counter()

    def write_hour(h: int) -> None:
        at = DAY + timedelta(hours=h)
        for f in range(files):
            first = (h * files + f) * per_file
            log.append(rows_for(first, per_file, at + f * per_file * step, step))

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(write_hour, range(24)))
    total = 24 * files * per_file
    print(f"# wrote {24 * files} micro-batch files, {total} rows in {time.perf_counter() - t0:.0f} s", flush=True)

    seconds, n = read_day(log, DAY)
    assert n == total, n
    rec.figure("drift_read_24h_micro_batches_seconds", seconds, "s", files=24 * files, rows=n)

    # kill -9 in the middle of compacting the first hour (after its compacted file is written)
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED, str(root), DAY.isoformat()], stdout=subprocess.PIPE, text=True,
        cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "start"
    hour_dir = root / "predictions" / "plant-z" / f"date={DAY:%Y-%m-%d}" / "hour=00"
    while not any(p.name.startswith(COMPACTED) for p in hour_dir.glob("*.parquet")):
        time.sleep(0.001)
    time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    left = len(list(hour_dir.glob("*.parquet")))
    frame = log.query(DAY, DAY + timedelta(hours=1), columns="part_id").to_arrow_table()
    ids = frame.column("part_id").to_pylist()
    expected = files * per_file
    rec.figure("kill9_rows_lost", expected - len(set(ids)), "rows", "0", files_left_in_hour=left)
    rec.figure("kill9_rows_duplicated", len(ids) - len(set(ids)), "rows", "0")

    t0 = time.perf_counter()
    result = log.compact(before=DAY + timedelta(days=1), after=DAY)
    rec.figure(
        "compaction_24h_seconds", time.perf_counter() - t0, "s", hours=result.hours, files_in=result.files_in,
        deleted=result.deleted,
    )  # fmt: skip
    seconds_c, n = read_day(log, DAY)
    assert n == total, n
    rec.figure(
        "drift_read_24h_compacted_seconds",
        seconds_c,
        "s",
        "<= 1",
        files=len(log.files(DAY, DAY + timedelta(days=1))),
        rows=n,
    )
    rec.figure("drift_read_24h_micro_batches_vs_compacted_ratio", seconds / seconds_c, "ratio")

    # a day one year old: written as compaction leaves it (one file an hour), read the same way
    year_ago = DAY - timedelta(days=365)
    for h in range(24):
        at = year_ago + timedelta(hours=h)
        log.append(rows_for(h * files * per_file, files * per_file, at, step))
    seconds_old, n = read_day(log, year_ago)
    assert n == total
    rec.figure("drift_read_24h_year_old_compacted_seconds", seconds_old, "s", "<= 1", rows=n)
    sizes = sum(p.stat().st_size for p in (root / "predictions").rglob("*.parquet")) / 2 / 1e6
    rec.figure("compacted_day_mb", sizes, "MB", rows=total)
    s3_read(rec, root)
    rec.save()


def s3_read(rec: Recorder, root: Path) -> None:
    """The compacted day over S3 (moto's server over HTTP on loopback)."""
    from moto.server import ThreadedMotoServer

    from andon.scoring.predlog import PredictionLog
    from andon.storage import S3ObjectStore

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        store = S3ObjectStore("bench", endpoint_url=f"http://{host}:{port}")
        store.ensure_bucket()
        day_dir = root / "predictions" / "plant-z" / f"date={DAY:%Y-%m-%d}"
        for p in sorted(day_dir.rglob("*.parquet")):
            store.put_file(str(p.relative_to(root)), p)
        seconds, n = read_day(PredictionLog(store, "plant-z"), DAY)
        rec.figure("drift_read_24h_compacted_s3_seconds", seconds, "s", "<= 1", rows=n, transport="moto over HTTP")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
