"""Governance at scale (issue 8): 47 generated plants (`andon config generate`), their deployments
rendered and applied to a real local Prefect server with `andon deploy` (6 deployments each, the
work pools, the triggers and schedules), then the policy check and the cross-plant report over
all of them.

The plants have no champions here (training 47 models is not the point): the report's cost per
plant is the registry, alert and monitoring look-ups. What a champion adds is one evaluation on
its golden set plus one per other plant in the generalization matrix; that cost is measured
separately by tests/integration/test_central.py and reported there, not extrapolated here.

Run: .venv/bin/python benchmarks/governance_scale.py [--plants 47]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import Recorder, free_port, isolated_home, kill, peak_rss_mb, start_prefect_server


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--plants", type=int, default=47)
    args = parser.parse_args()
    tmp = isolated_home()
    import httpx

    from andon.governance.fleet import generate_plants

    rec = Recorder("governance_scale")
    fleet = tmp / "configs"
    generate_plants(args.plants, fleet)
    os.environ["ANDON_CONFIGS_DIR"] = str(fleet)
    home = tmp / "prefect"
    home.mkdir()
    port = free_port()
    server = start_prefect_server(home, port)
    api = f"http://127.0.0.1:{port}/api"
    andon = str(Path(sys.executable).with_name("andon"))
    try:
        t0 = time.perf_counter()
        out = tmp / "prefect.yaml"
        done = subprocess.run([andon, "deployments", "render", "--out", str(out)], capture_output=True, text=True)
        render_s = time.perf_counter() - t0
        assert done.returncode == 0, done.stderr
        t0 = time.perf_counter()
        done = subprocess.run(
            [andon, "deploy", "--prefect-api-url", api, "--file", str(out)], capture_output=True, text=True
        )
        deploy_s = time.perf_counter() - t0
        assert done.returncode == 0, done.stderr + done.stdout
        count = httpx.post(f"{api}/deployments/count", json={}).json()
        automations = httpx.post(f"{api}/automations/count", json={}).json()
        rec.figure("render_deployments_seconds", render_s, "s", plants=args.plants, deployments=6 * args.plants)
        rec.figure("render_and_apply_deployments_seconds", render_s + deploy_s, "s", target="< 60",
                   deployments_on_server=count, automations_on_server=automations)  # fmt: skip

        t0 = time.perf_counter()
        done = subprocess.run([andon, "governance", "check", "--json"], capture_output=True, text=True)
        check_s = time.perf_counter() - t0
        rec.figure("policy_check_seconds", check_s, "s", plants=args.plants, exit_code=done.returncode)
        t0 = time.perf_counter()
        done = subprocess.run([andon, "governance", "report"], capture_output=True, text=True,
                              env=os.environ | {"COLUMNS": "200"})  # fmt: skip
        report_s = time.perf_counter() - t0
        assert done.returncode == 0, done.stderr
        rec.figure("governance_report_seconds", report_s, "s", target="< 30", plants=args.plants,
                   note="plants without champions: look-ups only (see the module docstring)")  # fmt: skip
    finally:
        kill(server)
    rec.figure("peak_rss_mb", peak_rss_mb(children=True), "MB", note="largest child process")
    rec.save()


if __name__ == "__main__":
    main()
