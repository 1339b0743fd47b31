"""Per-part sensor readings of a line, with drift and AI4I-style failure modes.

Failure modes follow the AI4I 2020 definitions (Matzka, 2020) so the sensor model and the
"new failure type logged" events behave like the real set: tool wear failure (TWF), heat
dissipation failure (HDF), power failure (PWF), overstrain failure (OSF) and random failure (RNF).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from andon.config import SensorRange

FAILURE_TYPES: tuple[str, ...] = ("TWF", "HDF", "PWF", "OSF", "RNF")


@dataclass(frozen=True)
class SensorDrift:
    """Slow changes of a line: a cooling problem, a worn bearing, a pressure regulator drifting."""

    temperature_offset: float = 0.0  # added to temperature_c, °C
    vibration_gain: float = 1.0  # multiplies vibration_mm_s
    pressure_offset: float = 0.0  # added to pressure_bar
    failure_rate_gain: float = 1.0  # multiplies the random failure probability

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def sensor_frame(
    ranges: dict[str, SensorRange],
    n: int,
    seed: int,
    stream: int,
    drift: SensorDrift | None = None,
    tool_wear_start: float = 0.0,
    disabled_failures: tuple[str, ...] = (),
) -> pd.DataFrame:
    """``n`` consecutive readings of one line; ``stream`` separates lines and batches.

    Columns: every configured sensor, ``tool_wear_min``, ``machine_failure`` and one 0/1 column
    per failure type. ``disabled_failures`` holds failure types back (they never occur), which is
    how a "new failure type" is introduced later in a scenario.
    """
    from scipy.signal import lfilter

    drift = drift or SensorDrift()
    rng = np.random.default_rng([seed, stream, 0x5E15])
    cols: dict[str, np.ndarray] = {}
    for name, spec in ranges.items():
        # an AR(1) walk around nominal: consecutive parts see similar conditions
        shocks = rng.normal(0, spec.noise, n)
        walk = lfilter([0.44], [1.0, -0.9], shocks)
        cols[name] = spec.nominal + walk + rng.normal(0, spec.noise * 0.3, n)
    if "temperature_c" in cols:
        cols["temperature_c"] = cols["temperature_c"] + drift.temperature_offset
    if "vibration_mm_s" in cols:
        cols["vibration_mm_s"] = np.abs(cols["vibration_mm_s"]) * drift.vibration_gain
    if "pressure_bar" in cols:
        cols["pressure_bar"] = cols["pressure_bar"] + drift.pressure_offset
    # tool wear grows 0.1 min per part and resets at a tool change
    wear = (tool_wear_start + 0.1 * np.arange(n)) % 240.0
    cols["tool_wear_min"] = wear

    torque = cols.get("torque_nm", np.full(n, 40.0))
    rpm = cols.get("rotational_speed_rpm", np.full(n, 1540.0))
    temp = cols.get("temperature_c", np.full(n, 38.0))
    power_w = torque * rpm * 2 * np.pi / 60
    fails = {
        "TWF": (wear > rng.uniform(200, 240)) & (rng.uniform(0, 1, n) < 0.05),
        "HDF": (temp > 46.0) & (rpm < 1380),
        "PWF": (power_w < 3500) | (power_w > 9000),
        "OSF": wear * torque > 11000,
        "RNF": rng.uniform(0, 1, n) < 0.001 * drift.failure_rate_gain,
    }
    any_fail = np.zeros(n, dtype=bool)
    for kind in FAILURE_TYPES:
        flag = fails[kind] if kind not in disabled_failures else np.zeros(n, dtype=bool)
        cols[kind] = flag.astype(np.int8)
        any_fail |= flag
    cols["machine_failure"] = any_fail.astype(np.int8)
    return pd.DataFrame({k: (v.astype(np.float32) if v.dtype.kind == "f" else v) for k, v in cols.items()})
