"""Delivers the outbox to the Prefect server: ``POST /api/events`` in batches, then confirms each
event by reading it back from the server's event store (``POST /api/events/filter`` by id).

Why confirm: the open-source server's event queue lives in memory; a 204 means "queued", and a
crash loses what was queued. An event the store does not show ``resend_after`` seconds after it
was sent is sent again (same id). A server that remembers the id ignores it; a restarted one
does not, and the retrain policy step recognizes the re-delivered event id instead. While the
server is away the forwarder backs off (0.5 s doubling to 10 s) and keeps everything.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from andon.gateway.outbox import Outbox, Pending


@dataclass
class ForwarderStats:
    posts: int = 0
    sent: int = 0
    resent: int = 0
    confirmed: int = 0
    failures: int = 0
    last_error: str = ""
    last_success: float = 0.0
    backoff: float = 0.0
    lags: list[float] = field(default_factory=list)  # receipt -> confirmation, the last 10,000


class Forwarder:
    def __init__(
        self,
        outbox: Outbox,
        api_url: str,
        *,
        batch: int = 200,
        resend_after: float = 20.0,
        confirm_after: float = 0.5,
        timeout: float = 5.0,
        max_backoff: float = 10.0,
    ) -> None:
        import httpx

        self.outbox = outbox
        self.api_url = api_url.rstrip("/")
        self.batch, self.resend_after, self.confirm_after = batch, resend_after, confirm_after
        self.max_backoff = max_backoff
        self.client = httpx.Client(timeout=timeout)
        self.stats = ForwarderStats()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # one round ------------------------------------------------------------------------------
    def send_due(self) -> int:
        due = self.outbox.due(self.batch, self.resend_after)
        if not due:
            return 0
        ids = [p.id for p in due]
        try:
            resp = self.client.post(f"{self.api_url}/events", json=[p.event for p in due])
        except Exception as exc:
            self.outbox.mark_failed(ids, f"{type(exc).__name__}: {exc}")
            raise
        if resp.status_code >= 300:
            self.outbox.mark_failed(ids, f"HTTP {resp.status_code}: {resp.text[:200]}")
            raise RuntimeError(f"the Prefect server answered {resp.status_code}")
        self.outbox.mark_sent(ids)
        self.stats.posts += 1
        self.stats.sent += len(due)
        self.stats.resent += sum(1 for p in due if p.attempts > 0)
        return len(due)

    def confirm(self) -> int:
        waiting = self.outbox.unconfirmed(50, self.confirm_after)  # the server's page size is 50
        if not waiting:
            return 0
        since = min(_occurred(p) for p in waiting) - timedelta(minutes=1)
        until = datetime.now(UTC) + timedelta(minutes=1)
        body = {
            "filter": {
                "id": {"id": [p.id for p in waiting]},
                "occurred": {"since": since.isoformat(), "until": until.isoformat()},
            },
            "limit": 50,
        }
        resp = self.client.post(f"{self.api_url}/events/filter", json=body)
        if resp.status_code >= 300:
            raise RuntimeError(f"the Prefect server answered {resp.status_code} to the confirmation query")
        found = {e["id"] for e in resp.json().get("events", [])}
        if found:
            self.outbox.mark_confirmed(sorted(found))
            now = time.time()
            self.stats.confirmed += len(found)
            lags = [now - p.received_at for p in waiting if p.id in found]
            self.stats.lags = [*self.stats.lags, *lags][-10_000:]
        return len(found)

    def step(self) -> int:
        """Send what is due and confirm what was sent; the number of events that moved."""
        moved = self.send_due() + self.confirm()
        self.stats.last_success = time.time()
        return moved

    # the loop -------------------------------------------------------------------------------
    def run(self) -> None:
        backoff = 0.0
        while not self._stop.is_set():
            try:
                moved = self.step()
                backoff = 0.0
            except Exception as exc:
                self.stats.failures += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"[:300]
                backoff = min(self.max_backoff, max(0.5, backoff * 2))
                moved = 0
            self.stats.backoff = backoff
            if not moved:
                self._wake.wait(backoff or 0.2)
                self._wake.clear()

    def wake(self) -> None:
        """Something was enqueued: send it now rather than at the next poll."""
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="andon-forwarder", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=30)
        self.client.close()


def _occurred(p: Pending) -> datetime:
    return datetime.fromisoformat(p.event["occurred"])
