"""An MES event stream: what the manufacturing execution system says happened on the line.

Events carry a stable ``message_id`` (the MES's own id); Andon derives the Prefect event id
from it with uuid5, so an MES that retries never starts a second retraining.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import numpy as np

from andon.config import PlantConfig

MES_EVENT_TYPES: tuple[str, ...] = (
    "sku.introduced",
    "failure_type.logged",
    "product_mix.changed",
    "line.reconfigured",
)


def mes_events(
    cfg: PlantConfig, start: datetime, hours: float, seed: int, rate_per_day: float = 3.0
) -> list[dict[str, Any]]:
    """A plausible day of MES messages for one plant, ordered by time, deterministic in ``seed``."""
    rng = np.random.default_rng([seed, 0x3E5])
    n = int(rng.poisson(rate_per_day * hours / 24.0))
    offsets = np.sort(rng.uniform(0, hours * 3600, n))
    events: list[dict[str, Any]] = []
    for i, off in enumerate(offsets):
        kind = MES_EVENT_TYPES[int(rng.integers(0, len(MES_EVENT_TYPES)))]
        line = cfg.line_ids[int(rng.integers(0, len(cfg.line_ids)))]
        occurred = start + timedelta(seconds=float(off))
        payload: dict[str, Any]
        if kind == "sku.introduced":
            payload = {"sku": f"NEW-{int(rng.integers(100, 999))}", "line": line}
        elif kind == "failure_type.logged":
            payload = {"failure_type": str(rng.choice(["TWF", "HDF", "PWF", "OSF", "RNF"])), "line": line}
        elif kind == "product_mix.changed":
            weights = rng.dirichlet(np.ones(len(cfg.sku_codes)))
            payload = {
                "line": line,
                "mix": {code: round(float(w), 3) for code, w in zip(cfg.sku_codes, weights, strict=True)},
                "shift": round(float(rng.uniform(0.05, 0.5)), 3),
            }
        else:
            payload = {
                "line": line,
                "change": str(rng.choice(["camera-replaced", "fixture-changed", "speed-up"])),
            }
        events.append(
            {
                "message_id": f"{cfg.id}-mes-{seed}-{i:05d}",
                "type": kind,
                "plant": cfg.id,
                "occurred": occurred.isoformat(),
                "payload": payload,
            }
        )
    return events
