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


CASTING = Path(__file__).resolve().parents[2] / "shared" / "data" / "casting"


def casting_manifest(
    store: Any, cfg: Any, split: str, limit: int, day: int
) -> tuple[str, list[dict[str, Any]], list[Any]]:
    """Ingest ``limit`` casting images of ``split`` as raw batches and save them as one dataset
    version straight from their metadata (benchmarks skip the gate): (id, objects, batches)."""
    from datetime import UTC, datetime

    from andon.data.batches import parquet_to_frame
    from andon.data.datasets import build_manifest, save_manifest
    from andon.data.ingest import ingest_folder

    batches = ingest_folder(cfg, store, CASTING / split, limit=limit, start=datetime(2026, 11, day, tzinfo=UTC))
    objects = []
    for b in batches:
        meta = parquet_to_frame(store.get(b.metadata_key))
        objects += [{"key": r.image_key, "sha256": r.sha256, "label": r.label} for r in meta.itertuples()]
    m = build_manifest(cfg.id, objects, sources=[b.prefix for b in batches])
    save_manifest(store, m)
    return m.id, objects, batches


def casting_champion(store: Any, cfg: Any, flips_only: bool) -> Any:
    """small_cnn trained on 600 casting images at 128 px for 6 epochs (about a minute on 2 cores),
    promoted to champion; ``flips_only`` keeps only the recipe's first two augmentations."""
    from andon.lifecycle.promotion import promote
    from andon.training.run import train_plant

    train_id, _, _ = casting_manifest(store, cfg, "train", 600, 1)
    update: dict[str, Any] = {"training": cfg.recipe.training.model_copy(update={"epochs": 6, "batch_size": 32})}
    if flips_only:
        update["augmentations"] = cfg.recipe.augmentations[:2]
    out = train_plant(store, cfg, [train_id], recipe=cfg.recipe.model_copy(update=update))
    promote(store, cfg, force=True, reason="benchmark")
    return out


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_prefect_server(home: Path, port: int) -> Any:
    """A real ``prefect server start`` (SQLite under ``home``) in its own process group; waits for
    /api/health."""
    import os
    import subprocess
    import time

    import httpx

    env = os.environ | {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_SERVER_UI_ENABLED": "false",
    }
    exe = str(Path(sys.executable).with_name("prefect"))
    proc = subprocess.Popen(
        [exe, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    proc.kill()
    raise SystemExit("the Prefect server did not start")


def kill(proc: Any) -> None:
    import os
    import signal

    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def train_small_cnn(x: Any, y: Any, steps: int, seed: int, lr: float = 3e-3, init: Any = None) -> Any:
    """small_cnn on uint8 grey images ``x`` (N, H, W) and class ids ``y``: a fixed number of
    AdamW one-cycle steps of 64 (horizontal flips), optionally from ``init`` weights. The same
    loop for every strategy a benchmark compares, so only the data or the start differs."""
    import numpy as np
    import torch

    from andon.models import build_model

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_model("small_cnn", 1, 2)
    if init is not None:
        model.load_state_dict(init)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    xt = torch.from_numpy(x).float().div(255).unsqueeze(1)
    yt = torch.from_numpy(y).long()
    model.train()
    for _ in range(steps):
        idx = torch.from_numpy(rng.integers(0, len(xt), min(64, len(xt))))
        xb = xt[idx]
        flip = torch.rand(len(xb)) < 0.5
        xb[flip] = xb[flip].flip(-1)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xb), yt[idx]).backward()
        opt.step()
        sched.step()
    return model.eval()
