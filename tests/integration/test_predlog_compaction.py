"""Compaction killed with SIGKILL at any point (reading the micro-batches, between the compacted
file and the deletes, in the middle of the deletes): no row lost, none read twice, and the next
run finishes the job. A real process, a real kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from andon.scoring.predlog import COMPACTED, PredictionLog
from andon.storage import LocalObjectStore

pytestmark = pytest.mark.integration

HOUR = datetime(2026, 11, 26, 7, tzinfo=UTC)
FILES, PER_FILE = 600, 3

COMPACTOR = """
import sys, time
from datetime import datetime, timedelta, UTC
from andon.scoring.predlog import PredictionLog
from andon.storage import LocalObjectStore

STOP_AT = int(sys.argv[2]) if len(sys.argv) > 2 else 0  # the delete to wait before, for the kill


class Stopping(LocalObjectStore):  # says where it is and waits there: the kill lands exactly there
    deletes = 0

    def delete(self, key):
        Stopping.deletes += 1
        if Stopping.deletes == STOP_AT:
            print("deleting", Stopping.deletes, flush=True)
            sys.stdin.readline()  # the test's kill -9 comes first
        super().delete(key)

hour = datetime(2026, 11, 26, 7, tzinfo=UTC)
print("start", flush=True)
PredictionLog(Stopping(sys.argv[1]), "plant-a").compact(before=hour + timedelta(hours=1), after=hour)
print("done", flush=True)
"""


def _rows(log: PredictionLog) -> tuple[int, bool]:
    frame = log.read(HOUR, HOUR + timedelta(hours=1), columns="part_id")
    return len(frame), bool(frame.part_id.is_unique)


def _compacted(root: Path) -> bool:
    return any(p.name.startswith(COMPACTED) for p in root.rglob("*.parquet"))


def test_kill_9_during_compaction_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    log = PredictionLog(LocalObjectStore(tmp_path), "plant-a")
    for f in range(FILES):
        t = HOUR + timedelta(seconds=f * 5)
        log.append([{
            "part_id": f"p{f:04d}-{j}", "line": "line-1", "scored_at": t, "model_name": "m", "model_version": 1,
            "predicted_class": "ok", "probabilities": [0.9, 0.1],
        } for j in range(PER_FILE)])  # fmt: skip
    total = FILES * PER_FILE
    assert _rows(log) == (total, True)
    kills = []
    # (when to kill, before which delete): while reading the micro-batches; after the compacted file
    # is written, before the first delete; among the deletes, before the 100th. Where the process
    # stands is told by the process, not guessed from a clock: the result does not depend on the load.
    for when, stop_at in (("reading", 0), ("written", 1), ("deleting", 100)):
        proc = subprocess.Popen(
            [sys.executable, "-c", COMPACTOR, str(tmp_path), str(stop_at)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout is not None and proc.stdout.readline().strip() == "start"
        if stop_at:
            assert proc.stdout.readline().split() == ["deleting", str(stop_at)]
            assert _compacted(tmp_path)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        files = len(log.hour_files(HOUR))
        kills.append((when, files))
        assert _rows(log) == (total, True), (when, files)
    # the kills landed where meant: none deleted yet (600 + the compacted file), then 99 deleted
    assert [files for _, files in kills[1:]] == [FILES + 1, FILES + 1 - 99], kills
    done = subprocess.run([sys.executable, "-c", COMPACTOR, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "done" in done.stdout, done.stderr
    assert len(log.hour_files(HOUR)) == 1 and _rows(log) == (total, True)
