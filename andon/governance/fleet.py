"""A fleet of plant configs for scale tests and benchmarks: ``andon config generate --plants N``.

Each generated plant differs the way real plants do: camera model, resolution and mounting,
lighting level, gamma and unevenness, line count, SKUs, timezone; a few override a recipe
setting inside the center's ranges. The output is a complete configs folder (``base.yaml`` and
``governance.yaml`` copied, ``plants/<id>.yaml`` per plant) for ``ANDON_CONFIGS_DIR``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

TIMEZONES = ("Europe/Berlin", "America/Chicago", "Asia/Kolkata", "Asia/Shanghai", "America/Sao_Paulo",
             "Europe/Warsaw", "America/Mexico_City", "Asia/Tokyo", "Europe/Madrid", "Africa/Johannesburg")  # fmt: skip
CAMERAS = ("basler-ace-a2a1920", "ids-ueye-cp", "flir-blackfly-s", "allied-alvium-1800")
SHAPES = ("disc", "plate", "ring", "impeller")


def _r(rng: Any, lo: float, hi: float, digits: int = 2) -> float:
    return round(float(rng.uniform(lo, hi)), digits)


def plant_doc(i: int, rng: Any) -> dict[str, Any]:
    shape = SHAPES[i % len(SHAPES)]
    lines = [{"id": f"line-{k + 1}", "parts_per_second": float(rng.choice([5, 8, 10, 12]))} for k in range(1 + i % 3)]
    skus = [
        {
            "code": f"{shape[:3].upper()}-{100 + 10 * k}",
            "shape": shape,
            "size": round(0.7 + 0.05 * k, 2),
            "holes": k % 4,
        }
        for k in range(1 + i % 4)
    ]
    doc: dict[str, Any] = {
        "name": f"Plant {i:03d} (generated)",
        "timezone": TIMEZONES[i % len(TIMEZONES)],
        "lines": lines,
        "skus": skus,
        "camera": {
            "model": CAMERAS[i % len(CAMERAS)],
            "rotation_deg": _r(rng, -6, 6, 1),
            "noise_std": _r(rng, 1, 6, 1),
        },
        "lighting": {"brightness": _r(rng, 0.8, 1.2), "gamma": _r(rng, 0.9, 1.15), "unevenness": _r(rng, 0, 0.25)},
        "mes": {"topic_prefix": f"acme/plant-{i:03d}/mes"},
    }
    if i % 5 == 0:  # a local recipe override, inside the center's ranges
        doc["recipe"] = {"training": {"epochs": 10, "learning_rate": 0.002}}
    return doc


def generate_plants(n: int, out: Path, seed: int = 0, source: Path | None = None) -> list[str]:
    """Write a configs folder with ``n`` generated plants to ``out``; returns the plant ids."""
    import numpy as np
    import yaml

    from andon.config import configs_dir

    src = source or configs_dir()
    (out / "plants").mkdir(parents=True, exist_ok=True)
    for name in ("base.yaml", "governance.yaml"):
        shutil.copy(src / name, out / name)
    if (src / "tables").is_dir():
        shutil.copytree(src / "tables", out / "tables", dirs_exist_ok=True)
    rng = np.random.default_rng(seed)
    ids = []
    for i in range(1, n + 1):
        pid = f"plant-{i:03d}"
        (out / "plants" / f"{pid}.yaml").write_text(yaml.safe_dump(plant_doc(i, rng), sort_keys=False))
        ids.append(pid)
    return ids
