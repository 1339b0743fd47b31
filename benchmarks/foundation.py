"""Start-up costs a user feels: `andon --help`, and `andon up` from cold to both health endpoints.

Baseline for --help: `python -c pass` in the same run (the interpreter's own start-up).

Run: .venv/bin/python benchmarks/foundation.py
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import Recorder

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _time(cmd: list[str], env: dict[str, str] | None = None, runs: int = 7) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=env)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    rec = Recorder("foundation")
    bare = _time([sys.executable, "-c", "pass"])
    help_s = _time([str(BIN / "andon"), "--help"])
    rec.figure("andon_help_ms", help_s * 1000, "ms", "< 1000")
    rec.figure("python_startup_ms", bare * 1000, "ms")
    rec.figure("andon_help_vs_python_startup_ratio", help_s / bare, "ratio")

    with tempfile.TemporaryDirectory() as home:
        env = {
            **os.environ,
            "ANDON_HOME": home,
            "ANDON_PREFECT_PORT": str(_free_port()),
            "ANDON_MLFLOW_PORT": str(_free_port()),
        }
        t0 = time.perf_counter()
        subprocess.run([str(BIN / "andon"), "up"], check=True, capture_output=True, env=env)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        subprocess.run([str(BIN / "andon"), "up"], check=True, capture_output=True, env=env)
        warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        subprocess.run([str(BIN / "andon"), "down"], check=True, capture_output=True, env=env)
        stop = time.perf_counter() - t0
    rec.figure("andon_up_cold_s", cold, "s", note="fresh SQLite databases, until both health endpoints answer")
    rec.figure("andon_up_again_s", warm, "s", note="services already running: reused")
    rec.figure("andon_down_s", stop, "s")
    rec.save()


if __name__ == "__main__":
    main()
