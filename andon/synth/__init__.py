"""Deterministic synthetic plants: part images, sensor streams and MES events, with drift knobs.

Example:
    >>> from andon.synth.images import Drift, render_part
    >>> from andon.config import Sku
    >>> img = render_part(seed=7, index=0, size=128, sku=Sku(code="DSC-100"), defect="scratch")
    >>> img.shape, img.dtype.name
    ((128, 128), 'uint8')

Every part is rendered from ``(seed, index)`` alone, so the same plant, seed and part number
always give the same bytes, whatever the batch size or the number of worker processes.
"""

# the one range of each drift knob (Drift checks it; the CLI options and the flow's form use it)
DRIFT_LIMITS: dict[str, tuple[float, float]] = {
    "brightness": (0.05, 4.0),  # lighting gain multiplier (1 = none)
    "gamma": (0.1, 5.0),  # gamma multiplier (1 = none)
    "unevenness": (0.0, 1.0),  # extra uneven illumination
    "rotation_deg": (-180.0, 180.0),  # camera rotation drift, degrees
    "blur_sigma": (0.0, 10.0),  # focus blur drift (Gaussian sigma, px)
    "noise_std": (0.0, 64.0),  # extra sensor noise (grey levels)
}
