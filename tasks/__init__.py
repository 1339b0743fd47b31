"""Prefect tasks: thin wrappers over ``andon`` (retries, artifacts, events). No domain logic here."""

from __future__ import annotations

from typing import Any


def transient_only(task: Any, task_run: Any, state: Any) -> bool:
    """``retry_condition_fn`` that retries storage / network hiccups, never a user error."""
    from andon.errors import AndonError, StorageError

    exc = state.result(raise_on_failure=False)
    if isinstance(exc, StorageError):
        return True
    return isinstance(exc, ConnectionError | TimeoutError) and not isinstance(exc, AndonError)
