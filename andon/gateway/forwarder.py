"""Delivers the outbox to the Prefect server: ``POST /api/events`` in batches, then confirms each
event by reading it back from the server's event store (``POST /api/events/filter`` by id).

Why confirm: the open-source server's event queue lives in memory; a 204 means "queued", and a
crash loses what was queued. An event the store does not show ``resend_after`` seconds after it
was sent is sent again (same id). A server that remembers the id ignores it; a restarted one
does not, and the retrain policy step recognizes the re-delivered event id instead. While the
server is away the forwarder backs off (0.5 s doubling to 10 s) and keeps everything; a new event
does not cut a backoff short (a failing server gets one attempt per interval, not one per event).

A poison event (one the server refuses, e.g. a text Prefect on PostgreSQL cannot store) never
holds back the others. One that cannot be encoded (a lone surrogate, NaN) is parked before it is
sent, and so is one holding a NUL (written before the gateway refused control characters):
Prefect answers 204, then fails to store the whole batch it is flushed with, again and again,
dropping the valid events around it. After a refused batch the forwarder sends the events one by
one; one refused alone with a client error (4xx), or with a server error while others of the
same round were accepted, is parked as dead with the server's answer as reason. A resent event
still not in the server's store after ``max_attempts`` tries, while events received after it were
confirmed, is parked too, once the server first accepted it ``park_after`` seconds ago or more.
Resends go one event per request. Parked events stay in the outbox (``dead``, with ``dead_reason``).

Why ``park_after`` (6 minutes): with Redis messaging (prefect-redis 0.3.0) an API server marks an
event id as seen for 5 minutes *before* it publishes the event; a server killed between the two
has published nothing, and every resend of that id, to any server, is dropped as a duplicate
(with a 204) until the mark expires. The first resend after that is stored: late, not lost
(``benchmarks/topology.py`` met it, 2 events of 2,000, with an API server killed under load).

Several API servers (replicas on one database and one Redis, docs/scaling.md): ``api_url`` may
list them, comma-separated. The forwarder talks to one at a time and moves to the next when the
one it uses cannot be reached or answers 502-504, so a gateway keeps forwarding while one replica
is down, with or without a load balancer in front. Whatever was in flight when it failed is resent
to the next one, with its id: a replica that did take it already published it to the shared
messaging layer, whose de-duplication by event id drops the copy.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from andon.gateway.outbox import Outbox, Pending


@dataclass
class ForwarderStats:
    posts: int = 0
    sent: int = 0
    resent: int = 0
    confirmed: int = 0
    failures: int = 0
    dead: int = 0
    last_error: str = ""
    last_success: float = 0.0
    backoff: float = 0.0
    failovers: int = 0  # moves to the next API server
    lags: list[float] = field(default_factory=list)  # receipt -> confirmation, the last 10,000


class Forwarder:
    def __init__(
        self,
        outbox: Outbox,
        api_url: str | Sequence[str],
        *,
        batch: int = 200,
        resend_after: float = 20.0,
        confirm_after: float = 0.5,
        timeout: float = 5.0,
        max_backoff: float = 10.0,
        min_backoff: float = 0.5,
        max_attempts: int = 5,
        park_after: float = 360.0,
    ) -> None:
        import httpx

        self.outbox = outbox
        self.api_urls = api_urls(api_url)
        self.api_url = self.api_urls[0]  # the one in use
        self.batch, self.resend_after, self.confirm_after = batch, resend_after, confirm_after
        self.max_backoff, self.min_backoff, self.max_attempts = max_backoff, min_backoff, max_attempts
        self.park_after = park_after
        from andon.settings import prefect_auth_headers

        self.client = httpx.Client(timeout=timeout, headers=prefect_auth_headers())  # PREFECT_API_AUTH_STRING
        self.stats = ForwarderStats()
        self.on_confirmed: Callable[[list[float]], None] | None = None  # delivery lags (metrics)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # one round ------------------------------------------------------------------------------
    def send_due(self) -> int:
        due = self.outbox.due(self.batch, self.resend_after)
        if not due:
            return 0
        due = [p for p in due if not self._poison(p)]
        fresh = [p for p in due if p.sent_at is None]
        resends = [p for p in due if p.sent_at is not None]
        moved = self._send_batch(fresh) if fresh else 0
        if resends:
            overtaken_before = self.outbox.newest_confirmed()
            now = time.time()
            for p in resends:
                accepted = p.first_accepted_at or p.sent_at or p.received_at
                overtaken = p.received_at < overtaken_before
                if p.attempts >= self.max_attempts and overtaken and now - accepted >= self.park_after:
                    self._park(p, f"never confirmed by the server after {p.attempts} attempts, while later events were")
                else:
                    moved += self._send_batch([p])
        return moved

    def _poison(self, p: Pending) -> bool:
        """Park ``p`` when no server could ever take it: it cannot be sent as JSON (a lone
        surrogate, NaN: the whole batch would fail to encode) or holds a NUL."""
        try:
            json.dumps(p.event, ensure_ascii=False, allow_nan=False).encode()
        except (ValueError, TypeError, RecursionError) as exc:  # UnicodeEncodeError is a ValueError
            self._park(p, f"cannot be sent as JSON ({type(exc).__name__}: {str(exc)[:200]}): never sent")
            return True
        if _holds_nul(p.event):
            self._park(p, "holds a NUL character (\\u0000), which Prefect on PostgreSQL cannot store: never sent")
            return True
        return False

    def _post(self, events: list[Pending]) -> Any:
        """The server's answer; a transport error marks the events failed and propagates."""
        try:
            resp = self.client.post(f"{self.api_url}/events", json=[p.event for p in events])
        except Exception as exc:
            self.outbox.mark_failed([p.id for p in events], f"{type(exc).__name__}: {exc}")
            self._fail_over(exc)
            raise
        if resp.status_code in UNAVAILABLE:
            self._fail_over(None)
        return resp

    def _fail_over(self, exc: Exception | None) -> None:
        """The API server in use is away (unreachable, or a gateway in front of it says so): use the next."""
        import httpx

        if len(self.api_urls) < 2 or not (exc is None or isinstance(exc, httpx.TransportError)):
            return
        i = self.api_urls.index(self.api_url) if self.api_url in self.api_urls else -1
        self.api_url = self.api_urls[(i + 1) % len(self.api_urls)]
        self.stats.failovers += 1

    def _accepted(self, events: list[Pending]) -> int:
        self.outbox.mark_sent([p.id for p in events])
        self.stats.posts += 1
        self.stats.sent += len(events)
        self.stats.resent += sum(1 for p in events if p.sent_at is not None)
        return len(events)

    def _park(self, p: Pending, reason: str) -> None:
        self.outbox.mark_dead(p.id, reason)
        self.stats.dead += 1
        self.stats.last_error = f"event {p.id} parked as dead: {reason}"[:300]

    def _send_batch(self, events: list[Pending]) -> int:
        resp = self._post(events)
        verdict = _verdict(resp.status_code)
        if verdict == "ok":
            return self._accepted(events)
        answer = f"HTTP {resp.status_code}: {resp.text[:300]}"
        if len(events) > 1 and verdict != "retry":  # one of them may be poison: find it, one by one
            return self._send_singly(events)
        if verdict == "refused":
            self._park(events[0], f"refused by the server: {answer}")
            return 1
        self.outbox.mark_failed([p.id for p in events], answer)
        raise RuntimeError(f"the Prefect server answered {resp.status_code}")

    def _send_singly(self, events: list[Pending]) -> int:
        accepted = 0
        doubtful: list[tuple[Pending, str]] = []
        for i, p in enumerate(events):
            try:
                resp = self._post([p])
            except Exception:
                self.outbox.mark_failed([q.id for q, _ in doubtful] + [q.id for q in events[i + 1 :]], "not sent")
                raise
            answer = f"HTTP {resp.status_code}: {resp.text[:300]}"
            verdict = _verdict(resp.status_code)
            if verdict == "ok":
                accepted += self._accepted([p])
            elif verdict == "refused":
                self._park(p, f"refused by the server: {answer}")
            elif verdict == "error":
                doubtful.append((p, answer))
            else:  # overloaded, away, unauthorized: stop here and back off
                self.outbox.mark_failed([q.id for q, _ in doubtful] + [q.id for q in events[i:]], answer)
                raise RuntimeError(f"the Prefect server answered {resp.status_code}")
        for p, answer in doubtful:
            if accepted:  # the server took others of this round: it fails on what this one holds
                self._park(p, f"refused by the server while it accepted others: {answer}")
            else:
                self.outbox.mark_failed([p.id], answer)
        if doubtful and not accepted:  # nothing went through: the server is failing, not the events
            raise RuntimeError(f"the Prefect server failed on all {len(doubtful)} events sent one by one")
        return len(events)

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
        try:
            resp = self.client.post(f"{self.api_url}/events/filter", json=body)
        except Exception as exc:
            self._fail_over(exc)
            raise
        if resp.status_code in UNAVAILABLE:
            self._fail_over(None)
        if resp.status_code >= 300:
            raise RuntimeError(f"the Prefect server answered {resp.status_code} to the confirmation query")
        found = {e["id"] for e in resp.json().get("events", [])}
        if found:
            self.outbox.mark_confirmed(sorted(found))
            now = time.time()
            self.stats.confirmed += len(found)
            lags = [now - p.received_at for p in waiting if p.id in found]
            self.stats.lags = [*self.stats.lags, *lags][-10_000:]
            if self.on_confirmed is not None:
                self.on_confirmed(lags)
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
                backoff = min(self.max_backoff, max(self.min_backoff, backoff * 2))
                moved = 0
            self.stats.backoff = backoff
            if backoff:  # new events wait out the backoff too; only stop() cuts it short
                self._stop.wait(backoff)
                self._wake.clear()
            elif not moved:
                self._wake.wait(0.2)
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


UNAVAILABLE = (502, 503, 504)  # a proxy's "the server behind me is away": try the next server


def api_urls(value: str | Sequence[str]) -> list[str]:
    """The API servers to forward to, in order: a URL, a comma-separated list, or a sequence.

    >>> api_urls("http://a:4200/api/, http://b:4200/api")
    ['http://a:4200/api', 'http://b:4200/api']
    """
    items = value.split(",") if isinstance(value, str) else list(value)
    urls = [u.strip().rstrip("/") for u in items if u.strip()]
    if not urls:
        raise ValueError("no Prefect API URL to forward events to")
    return urls


def _holds_nul(value: Any) -> bool:
    """Whether a NUL is in any string or key of ``value`` (decoded JSON)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _verdict(status: int) -> str:
    """ok; refused (a client error about the event itself); error (a server error: the event's
    fault when others get through); retry (auth, routing, overload, timeouts: never the event's)."""
    if status < 300:
        return "ok"
    if status in (401, 403, 404, 408, 409, 425, 429, 502, 503, 504) or status < 400:
        return "retry"
    return "refused" if status < 500 else "error"


def _occurred(p: Pending) -> datetime:
    return datetime.fromisoformat(p.event["occurred"])
