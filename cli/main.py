"""The ``andon`` entry point: the root app with every command group added, and ``main`` that
prints a user error as one clean line (no traceback) with its exit code.

Entry points are one layer: ``cli -> flows -> tasks -> andon``, every arrow down."""

from __future__ import annotations

import sys

from andon.cli import (  # noqa: F401  (each adds its commands)
    config,
    data,
    demo,
    gateway,
    governance,
    label,
    models,
    monitor,
    scoring,
    stack,
    ui,
    validate,
)  # fmt: skip
from andon.cli.root import app  # (each module above adds its commands to it)

__all__ = ["app", "main"]


def main() -> None:
    """Entry point: user errors print one clean message, no traceback."""
    import os

    from andon.errors import AndonError

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # factories are often offline; nothing phones home
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "andon")  # flows run by a command log the library's progress
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")  # and outside a flow, no warning

    try:
        app()
    except AndonError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(exc.exit_code)
