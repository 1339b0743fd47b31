"""Andon: MLOps scaffolding that keeps factory models alive after launch day."""

__version__ = "0.1.0"
