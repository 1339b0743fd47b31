"""`andon up` / `status` / `down` with the real Prefect and MLflow servers as processes."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import free_port

from andon import stack
from andon.errors import PortInUseError
from andon.settings import get_settings

pytestmark = pytest.mark.slow


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status, resp.read()


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def test_up_is_idempotent_and_down_leaves_nothing(stack_env: Path) -> None:
    settings = get_settings()
    first = {s.name: s for s in stack.up(settings)}
    assert {n: s.state for n, s in first.items()} == {"prefect": "running", "mlflow": "running", "ui": "running"}
    status, body = _get(f"http://127.0.0.1:{settings.prefect_port}/api/health")
    assert status == 200 and body.strip() == b"true"
    status, body = _get(f"http://127.0.0.1:{settings.mlflow_port}/health")
    assert status == 200 and body.strip() == b"OK"
    # the UIs are served too
    assert _get(f"http://127.0.0.1:{settings.prefect_port}/")[0] == 200
    assert _get(f"http://127.0.0.1:{settings.mlflow_port}/")[0] == 200
    assert _get(f"http://127.0.0.1:{settings.ui_port}/login")[0] == 200  # the floor's page
    # Prefect stores its database under ANDON_HOME (SQLite), analytics off
    assert (stack_env / "prefect" / "prefect.db").exists()
    assert (stack_env / "mlflow" / "mlflow.db").exists()
    record = json.loads((stack_env / "run" / "prefect.pid.json").read_text())
    assert record["pid"] == first["prefect"].pid and "--analytics-off" in record["command"]

    again = {s.name: s for s in stack.up(settings)}
    assert {n: s.pid for n, s in again.items()} == {n: s.pid for n, s in first.items()}, "second up reuses"

    # the CLI shows the same thing
    out = subprocess.run([sys.executable, "-m", "andon.cli", "status"], capture_output=True, text=True, check=True)
    assert out.stdout.count("running") == 3

    groups = [s.pid for s in first.values() if s.pid]
    assert all(_group_members(g) for g in groups)
    assert sorted(stack.down(settings)) == ["mlflow", "prefect", "ui"]
    assert [m for g in groups for m in _group_members(g)] == [], "down leaves no process behind"
    assert [s.state for s in stack.service_status(settings)] == ["stopped", "stopped", "stopped"]
    assert not list((stack_env / "run").glob("*.pid.json"))
    assert stack.down(settings) == []


def test_port_in_use_is_a_clear_error_and_starts_nothing(stack_env: Path) -> None:
    settings = get_settings()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", settings.prefect_port))
        squatter.listen()
        with pytest.raises(PortInUseError, match=rf"prefect: port {settings.prefect_port} .* \(ANDON_PREFECT_PORT\)"):
            stack.up(settings)
        statuses = {s.name: s.state for s in stack.service_status(settings)}
        assert statuses == {"prefect": "foreign process on port", "mlflow": "stopped", "ui": "stopped"}
    assert not list((stack_env / "run").glob("*.pid.json")), "nothing half-started is left"


def test_stale_pid_file_is_not_trusted(stack_env: Path) -> None:
    """A PID file pointing at another process (PID reuse) is never signalled."""
    settings = get_settings()
    (stack_env / "run").mkdir(parents=True)
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        record = {
            "pid": sleeper.pid,
            "port": settings.mlflow_port,
            "command": ["python", "-m", "mlflow", "server"],
        }
        (stack_env / "run" / "mlflow.pid.json").write_text(json.dumps(record))
        assert {s.name: s.state for s in stack.service_status(settings)}["mlflow"] == "stale pid file"
        assert stack.down(settings) == []
        assert sleeper.poll() is None, "down must not kill a process it did not start"
    finally:
        sleeper.kill()
        sleeper.wait()


def test_up_starts_evidently_ui_on_the_workspace_where_enabled(
    stack_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ANDON_EVIDENTLY_UI=true: `andon up` also serves the Evidently workspace the drift reports go to."""
    import pandas as pd
    from evidently import Report
    from evidently.presets import DataDriftPreset

    from andon.monitoring.drift import add_to_workspace
    from andon.settings import reset_settings

    monkeypatch.setenv("ANDON_EVIDENTLY_UI", "true")
    monkeypatch.setenv("ANDON_EVIDENTLY_PORT", str(free_port()))
    reset_settings()
    settings = get_settings()
    frame = pd.DataFrame({"brightness": [float(i % 7) for i in range(60)], "contrast": [1.0 * i for i in range(60)]})
    snapshot = Report([DataDriftPreset()]).run(frame, frame.iloc[::-1].reset_index(drop=True))
    assert add_to_workspace("plant-a", snapshot, datetime(2026, 11, 26, 8, tzinfo=UTC))
    states = {s.name: s.state for s in stack.up(settings)}
    assert states == {"prefect": "running", "mlflow": "running", "evidently": "running", "ui": "running"}
    status, body = _get(f"http://127.0.0.1:{settings.evidently_port}/api/projects")
    assert status == 200 and b"andon plant-a" in body
    assert sorted(stack.down(settings)) == ["evidently", "mlflow", "prefect", "ui"]
