"""Scoring: batch scoring (``batch``), the sensor model (``sensor``), the online service (``online``),
the prediction log (``predlog``)."""
