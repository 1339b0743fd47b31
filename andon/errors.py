"""One exception hierarchy for everything a user can cause.

Every error subclasses :class:`AndonError` *and* the builtin it most resembles, so callers can
catch either ``AndonError`` (the CLI does, to print a clean message and exit non-zero) or the
builtin (``ValueError``, ``FileNotFoundError``...) they would expect from plain Python.
Messages say what was wrong and what to do about it.
"""

from __future__ import annotations


class AndonError(Exception):
    """Base class of every error Andon raises on purpose."""

    exit_code: int = 1


class ConfigError(AndonError, ValueError):
    """A settings value or plant config is invalid. Messages read ``file: field: problem``."""


class UnknownPlantError(ConfigError, LookupError):
    """A plant id that has no ``configs/plants/<plant>.yaml``."""


class StorageError(AndonError, OSError):
    """The object store failed (after retries, for transient errors)."""


class InvalidKeyError(AndonError, ValueError):
    """An object key that could escape the store (``..``, absolute, empty segment...)."""


class ObjectNotFoundError(StorageError, FileNotFoundError):
    """The requested object does not exist."""


class ServiceError(AndonError, RuntimeError):
    """An embedded service (Prefect server, MLflow server) could not be started or reached."""


class PortInUseError(ServiceError):
    """The port a service should listen on is taken by a process Andon did not start."""


class DataError(AndonError, ValueError):
    """Input data (a folder to ingest, a batch, a table) is unusable as given."""


class IntegrityError(AndonError, ValueError):
    """A stored artifact is not the one its lineage recorded (a swapped or corrupted weights file):
    refused before anything is loaded from it. Messages name the expected and the found sha256."""
