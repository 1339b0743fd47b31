"""Prefect tasks: thin wrappers over ``andon`` (retries, artifacts, events). No domain logic here."""

from __future__ import annotations

import logging
from typing import Any

LIBRARY_LOGGER = "andon"


def link_artifact(key: str, store: Any, object_key: str, text: str) -> None:
    """A link artifact to a report in the object store that opens from the Prefect UI: through
    ``andon ui`` (``ANDON_UI_URL``; a plant's report behind its login, the cross-plant ones signed
    for 7 days), on the file store and S3 alike; with the page switched off (ANDON_UI_ENABLED=false)
    a presigned S3 URL, or the ``file://`` path on the machine that ran the flow."""
    from prefect.artifacts import create_link_artifact

    from andon.settings import get_settings
    from andon.storage import S3ObjectStore
    from andon.web.links import object_url

    if get_settings().ui_enabled:
        link = object_url(object_key)
    elif isinstance(store, S3ObjectStore):
        link = store.presigned_url(object_key, expires_s=7 * 24 * 3600)
    else:
        link, text = store.uri(object_key), f"{text} (a file on the machine that ran this flow)"
    create_link_artifact(key=key, link=link, link_text=text)


def library_logs_to_run() -> None:
    """The library's progress (epochs, gate and retrain decisions) in the flow run's Logs tab:
    Prefect attaches its API handler to the ``andon`` logger (PREFECT_LOGGING_EXTRA_LOGGERS=andon,
    set by Andon's deployments, workers and CLI); this lets its INFO lines through."""
    lib = logging.getLogger(LIBRARY_LOGGER)
    lib.setLevel(logging.INFO)
    if lib.handlers:  # Prefect's API handler is attached: the run's log has them; a terminal (the CLI,
        lib.propagate = False  # the demo, a worker) keeps its own output, not every epoch twice


def transient_only(task: Any, task_run: Any, state: Any) -> bool:
    """``retry_condition_fn`` that retries storage / network hiccups, never a user error."""
    from andon.errors import AndonError, StorageError

    exc = state.result(raise_on_failure=False)
    if isinstance(exc, StorageError):
        return True
    return isinstance(exc, ConnectionError | TimeoutError) and not isinstance(exc, AndonError)
