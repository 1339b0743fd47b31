"""Shared by every command module: a console, the settings, a progress bar, time options, terminal-safe text."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


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


def post_event(event: str, plant: str, payload: dict[str, Any]) -> None:
    from andon import events

    settings = andon_settings()
    eid = events.event_id(event, plant, *payload.values())
    # a monitoring alert carries the label retrain triggers match; other facts are just the plant
    resource = events.alert_resource(payload) if "retrain" in payload else events.plant_resource(plant)
    if not events.post_event(settings.prefect_api_url, event, resource, payload, eid):
        sys.stderr.write(f"note: {event} not delivered (Prefect at {settings.prefect_api_url} did not answer)\n")


def time_window(start: str | None, end: str | None, days: int) -> tuple[datetime, datetime]:
    from andon.audit import default_window

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
