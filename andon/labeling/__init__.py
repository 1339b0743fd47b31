"""Labels: reviewed labels (``labels``) and the active-learning queue (``queue``)."""
