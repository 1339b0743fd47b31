"""What `andon up` costs the machine (issue 17): processes and resident memory of the embedded
Prefect and MLflow servers and, since issue 18, `andon ui`, as Andon starts them (MLflow without
its job runner, which Andon never uses) and, in the same run, as a plain `mlflow server` starts by
default (job runner and huey consumers on): the baseline. And how long a command takes to say that MLflow is down.

Run: .venv/bin/python benchmarks/stack_footprint.py
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import Recorder, free_port, isolated_home


def _tree(pids: list[int]) -> tuple[int, float]:
    """Processes and summed RSS (MB) of the given processes and all their descendants."""
    import psutil

    procs: dict[int, psutil.Process] = {}
    for pid in pids:
        try:
            root = psutil.Process(pid)
        except psutil.NoSuchProcess:
            continue
        for p in [root, *root.children(recursive=True)]:
            procs[p.pid] = p
    rss = 0
    for p in procs.values():
        with contextlib.suppress(psutil.Error):  # gone meanwhile
            rss += p.memory_info().rss
    return len(procs), rss / 2**20


def _measure(job_runner: bool, settle_s: float) -> tuple[int, float, float, tuple[int, float]]:
    """(processes, RSS MB, seconds to healthy, (processes, RSS MB) of `andon ui` alone) of one
    `andon up` in a fresh home."""
    from andon import stack
    from andon.settings import get_settings, reset_settings

    isolated_home()
    os.environ["ANDON_PREFECT_PORT"] = str(free_port())
    os.environ["ANDON_MLFLOW_PORT"] = str(free_port())
    os.environ["ANDON_UI_PORT"] = str(free_port())
    os.environ.pop("ANDON_MLFLOW_TRACKING_URI", None)  # the embedded server's own
    reset_settings()
    settings = get_settings()
    original = stack.services

    def services(s):  # type: ignore[no-untyped-def]
        out = original(s)
        if job_runner:  # the plain `mlflow server` default
            out = [
                dataclasses.replace(x, env=x.env | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true"})
                if x.name == "mlflow"
                else x
                for x in out
            ]
        return out

    stack.services = services
    try:
        t0 = time.perf_counter()
        stack.up(settings)
        healthy_s = time.perf_counter() - t0
        time.sleep(settle_s)  # the job runner and consumers start after the server answers
        statuses = stack.service_status(settings)
        pids = [st.pid for st in statuses if st.pid]
        n, rss = _tree(pids)
        ui = _tree([st.pid for st in statuses if st.name == "ui" and st.pid])
    finally:
        stack.down(settings)
        stack.services = original
    return n, rss, healthy_s, ui


def _mlflow_down_seconds() -> float:
    """`andon models list` against a port nothing listens on, with Andon's retry policy."""
    env = os.environ | {"ANDON_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}
    exe = str(Path(sys.executable).with_name("andon"))
    t0 = time.perf_counter()
    done = subprocess.run([exe, "models", "list", "plant-a.surface-defects"], env=env, capture_output=True, text=True)
    assert done.returncode != 0 and "did not answer" in done.stderr, done.stderr
    return time.perf_counter() - t0


def main() -> None:
    rec = Recorder("stack_footprint")
    base_n, base_rss, base_s, _ = _measure(job_runner=True, settle_s=15)
    n, rss, s, (ui_n, ui_rss) = _measure(job_runner=False, settle_s=15)
    rec.figure("andon_up_processes", n, "processes", baseline_job_runner_on=base_n)
    rec.figure("andon_up_rss_mb", rss, "MB", baseline_job_runner_on_mb=round(base_rss, 1))
    rec.figure("andon_up_rss_vs_job_runner_on_ratio", rss / base_rss, "ratio", target="< 1")
    rec.figure("andon_up_healthy_seconds", s, "s", baseline_job_runner_on_s=round(base_s, 1))
    rec.figure("andon_ui_rss_mb", ui_rss, "MB", processes=ui_n, note="part of andon_up_rss_mb (issue 18)")
    rec.figure(
        "mlflow_down_said_in_seconds",
        _mlflow_down_seconds(),
        "s",
        target="<= 30",
        baseline_s=749.6,
        baseline="MLflow's default retries plus registry.with_retries' 3 rounds (before issue 17: 12 min 30 s, "
        "`time andon models list` against a closed port, measured once on this machine)",
    )
    rec.save()


if __name__ == "__main__":
    main()
