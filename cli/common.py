"""Shared by every command module: a console, the settings, a progress bar, time options, terminal-safe text."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console


JsonOption = Annotated[bool, typer.Option("--json", help="print JSON on stdout instead of a table")]


def print_json(data: Any) -> None:
    """What a list or show command found, as JSON on stdout (for scripts and pipes)."""
    import json

    sys.stdout.write(json.dumps(data, indent=1, default=str) + "\n")


def make_console() -> Console:
    from rich.console import Console

    return Console()


def andon_settings() -> Any:
    from andon.settings import get_settings

    return get_settings()


def progress_bar(console: Console) -> Any:
    """A progress bar on stderr, so stdout stays clean for --json and pipes."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,  # gone when done (or failed): the result table is what stays
    )


def parse_time(value: str | None, option: str = "--start") -> datetime | None:
    if value is None:
        return None
    from andon.errors import ConfigError

    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{option}: not an ISO time: {value!r} (e.g. 2026-11-26T06:00:00+00:00)") from None
    if ts.tzinfo is None:
        raise ConfigError(f"{option}: give a timezone, e.g. {ts.strftime('%Y-%m-%dT%H:%M:%S')}+00:00")
    return ts


def post_event(ev: Any) -> None:
    """Send an ``andon.events.Event`` (built by its one builder) to Andon's Prefect; a server that
    does not answer is a note on stderr, not a failure (the fact is on the registry either way)."""
    from andon import events

    url = prefect_api_url()
    if not events.post_event(url, ev):
        sys.stderr.write(f"note: {ev.event} not delivered (Prefect at {url} did not answer)\n")


def prefect_api_url() -> str:
    """The Prefect server commands talk to: the current Prefect settings' (a profile,
    PREFECT_API_URL, a test harness), else Andon's own (ANDON_PREFECT_API_URL, `andon up`)."""
    from prefect.settings import get_current_settings

    return (get_current_settings().api.url or andon_settings().prefect_api_url).rstrip("/")


def run_flow(flow: Any, **params: Any) -> Any:
    """Run a flow of ``flows/`` in this process against Andon's Prefect server, so a command that
    is a pipeline (promote, governance central / fine-tune) is the flow: the same tasks, events,
    ids and artifacts, and its run shows in the UI (``prefect_api_url``); a server that does not
    answer is a clear error within seconds."""
    import httpx
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from andon.errors import ServiceError
    from andon.settings import prefect_auth_headers

    url = prefect_api_url()
    try:
        ok = httpx.get(f"{url}/health", timeout=5, headers=prefect_auth_headers()).status_code == 200
    except httpx.HTTPError:
        ok = False
    if not ok:
        raise ServiceError(
            f"Prefect at {url} is not answering: start it with `andon up` (or set ANDON_PREFECT_API_URL)"
        )
    with temporary_settings(updates={PREFECT_API_URL: url}):
        return flow(**params)


def time_window(start: str | None, end: str | None, days: int) -> tuple[datetime, datetime]:
    from andon.explain.audit import default_window

    lo, hi = default_window(days)
    return parse_time(start, "--from") or lo, parse_time(end, "--to") or hi


BIDI = {0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2066, 0x2067, 0x2068, 0x2069, 0x200E, 0x200F}


def terminal_safe(text: str) -> str:
    """``text`` with every control character (ANSI escapes, carriage returns, bidi overrides...)
    shown as a visible escape such as ``\\x1b``, so data can never drive the operator's terminal."""
    import unicodedata

    return "".join(
        ch.encode("unicode_escape").decode("ascii") if unicodedata.category(ch) == "Cc" or ord(ch) in BIDI else ch
        for ch in text
    )


def duration(value: str, option: str = "--window") -> Any:
    from datetime import timedelta

    from andon.errors import ConfigError

    units = {"m": 60, "h": 3600, "d": 86400}
    if len(value) < 2 or value[-1] not in units or not value[:-1].isdigit() or int(value[:-1]) == 0:
        raise ConfigError(f"{option}: {value!r} is not a duration like 5m, 1h or 24h")
    return timedelta(seconds=int(value[:-1]) * units[value[-1]])
