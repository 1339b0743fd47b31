"""Control charts against time as inline SVG (no image files, no JavaScript): per series the
window z-scores with the Shewhart limits, the EWMA with its limits, and the CUSUM with its
decision interval, as the monitor held them (``monitoring/<plant>/state.json``).

Example:
    >>> svg = control_chart("brightness", {"at": ["2026-11-26T08:00:00+00:00", "2026-11-26T08:05:00+00:00"],
    ...     "history": [0.1, -6.0], "ewma_history": [0.02, -1.2], "cusum_history": [0.0, 5.5],
    ...     "limits": {"shewhart": 4.5, "ewma": 0.9, "cusum": 5.0}})
    >>> svg.count("<polyline") >= 3 and "brightness" in svg and "08:05" in svg
    True
"""

from __future__ import annotations

from html import escape
from typing import Any

W, H, PAD = 420, 110, 28


def _points(values: list[float], lo: float, hi: float, top: float) -> str:
    n = max(len(values) - 1, 1)
    span = (hi - lo) or 1.0
    return " ".join(
        f"{PAD + (W - 2 * PAD) * i / n:.1f},{top + (H - 20) * (1 - (v - lo) / span):.1f}" for i, v in enumerate(values)
    )


def _hline(value: float, lo: float, hi: float, top: float, css: str) -> str:
    y = top + (H - 20) * (1 - (value - lo) / ((hi - lo) or 1.0))
    return f'<line class="{css}" x1="{PAD}" x2="{W - PAD}" y1="{y:.1f}" y2="{y:.1f}"/>'


def control_chart(name: str, chart: dict[str, Any]) -> str:
    """Two panels for one series: z and EWMA (with their limits), then CUSUM (with h)."""
    z, ewma, cusum = chart.get("history", []), chart.get("ewma_history", []), chart.get("cusum_history", [])
    at, lim = chart.get("at", []), chart.get("limits", {})
    n = min(len(at), len(ewma), len(cusum))
    if n < 1 or not lim:
        return ""
    z, ewma, cusum, at = z[-n:], ewma[-n:], cusum[-n:], at[-n:]
    sh, el, h = float(lim["shewhart"]), float(lim["ewma"]), float(lim["cusum"])
    lo1, hi1 = min(min(z), -sh) - 0.5, max(max(z), sh) + 0.5
    lo2, hi2 = 0.0, max(max(cusum), h) * 1.1
    breach = [i for i, v in enumerate(z) if abs(v) > sh]
    few = [i for i in range(n) if i not in breach] if n <= 48 else []  # a short history: every window a dot
    dots = "".join(
        f'<circle class="breach" cx="{PAD + (W - 2 * PAD) * i / max(n - 1, 1):.1f}" '
        f'cy="{20 + (H - 20) * (1 - (z[i] - lo1) / ((hi1 - lo1) or 1)):.1f}" r="3"/>'
        for i in breach
    ) + "".join(
        f'<circle class="zdot" cx="{PAD + (W - 2 * PAD) * i / max(n - 1, 1):.1f}" '
        f'cy="{20 + (H - 20) * (1 - (z[i] - lo1) / ((hi1 - lo1) or 1)):.1f}" r="2"/>'
        for i in few
    )
    top2 = H + 30
    label = escape(name)
    return (
        f'<svg class="cc" viewBox="0 0 {W} {2 * H + 40}" role="img" aria-label="control charts of {label}">'
        f'<text x="{PAD}" y="12" class="t">{label}: z (Shewhart ±{sh:.2g}) and EWMA (±{el:.2g})</text>'
        + _hline(sh, lo1, hi1, 20, "lim") + _hline(-sh, lo1, hi1, 20, "lim")
        + _hline(el, lo1, hi1, 20, "elim") + _hline(-el, lo1, hi1, 20, "elim") + _hline(0, lo1, hi1, 20, "zero")
        + f'<polyline class="z" points="{_points(z, lo1, hi1, 20)}"/>'
        + f'<polyline class="ewma" points="{_points(ewma, lo1, hi1, 20)}"/>' + dots
        + f'<text x="{PAD}" y="{top2 - 6}" class="t">CUSUM (decision interval h = {h:.2g})</text>'
        + _hline(h, lo2, hi2, top2, "lim")
        + f'<polyline class="cusum" points="{_points(cusum, lo2, hi2, top2)}"/>'
        + f'<text x="{PAD}" y="{2 * H + 36}" class="a">{escape(at[0][5:16].replace("T", " "))}</text>'
        + f'<text x="{W - PAD}" y="{2 * H + 36}" class="a" text-anchor="end">'
        + f"{escape(at[-1][5:16].replace('T', ' '))} UTC</text></svg>"
    )  # fmt: skip
