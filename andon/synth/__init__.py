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
