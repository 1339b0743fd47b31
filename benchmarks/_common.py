"""Shared by the benchmark scripts: one JSON object per figure, printed and kept in results/."""

from __future__ import annotations

import json
import platform
import resource
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


class Recorder:
    def __init__(self, name: str) -> None:
        self.name = name
        self.rows: list[dict[str, Any]] = []

    def figure(self, figure: str, value: float, unit: str, target: str | None = None, **extra: Any) -> None:
        row = {"figure": figure, "value": round(value, 4), "unit": unit}
        if target:
            row["target"] = target
        row.update(extra)
        self.rows.append(row)
        print(json.dumps(row), flush=True)

    def save(self) -> None:
        RESULTS.mkdir(exist_ok=True)
        meta = {
            "figure": "_machine",
            "value": 0,
            "unit": "-",
            "cpu_count": _cpus(),
            "python": platform.python_version(),
        }
        lines = [json.dumps(r) for r in [*self.rows, meta]]
        (RESULTS / f"{self.name}.jsonl").write_text("\n".join(lines) + "\n")


def isolated_home() -> Path:
    """A throwaway ANDON_HOME and SQLite MLflow store, so a benchmark touches nothing of the user's."""
    import os
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="andon-bench-"))
    os.environ["ANDON_HOME"] = str(tmp / "home")
    os.environ["ANDON_MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    return tmp


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


def peak_rss_mb(children: bool = False) -> float:
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024
