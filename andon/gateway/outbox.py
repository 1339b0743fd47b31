"""The gateway's durable outbox: an event is acknowledged to the MES only after it is committed
here, and leaves only when the Prefect server has confirmably stored it.

One table of events (id = the deterministic event id, so an MES retry is a no-op), one of
signatures seen recently (replay protection that survives a restart). SQLite under
``ANDON_HOME`` by default (WAL, synchronous=FULL: a commit is on disk), Postgres by URL
(``ANDON_GATEWAY_OUTBOX_URL=postgresql://...``); the same SQLAlchemy Core code runs on both.

Lifecycle of a row: received (``received_at``) -> sent (``sent_at``, the server answered 204)
-> confirmed (``confirmed_at``, the server's event store has it). A row sent but unconfirmed for
``resend_after`` seconds is sent again: the server's queue is in memory and may have died with
it. An event the server refuses for good (see ``forwarder``) is parked: ``dead_at`` and
``dead_reason`` set, never sent again, counted as ``dead``, and it holds back nothing.
Rows are never deleted by the gateway (``prune`` removes confirmed rows older than a cut-off
when an operator asks).

A database that is away raises OutboxError (the caller keeps the message: an MQTT message
stays unacknowledged, an HTTP request gets 503); a value the database refuses raises DataError.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from andon.errors import DataError, ServiceError


@dataclass(frozen=True)
class Pending:
    id: str
    event: dict[str, Any]
    received_at: float
    attempts: int
    sent_at: float | None = None
    first_accepted_at: float | None = None  # the server's first 2xx for it


class Outbox:
    def __init__(self, url: str) -> None:
        import sqlalchemy as sa

        self.url = url
        sqlite = url.startswith("sqlite")
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg2://" + url.removeprefix("postgresql://")
        self.engine = sa.create_engine(
            url,
            connect_args={"timeout": 30, "check_same_thread": False} if sqlite else {},
            pool_pre_ping=not sqlite,
        )
        if sqlite:
            from sqlalchemy import event

            @event.listens_for(self.engine, "connect")
            def _pragmas(dbapi_conn: Any, _record: Any) -> None:
                cur = dbapi_conn.cursor()
                cur.execute("pragma journal_mode=wal")
                cur.execute("pragma synchronous=full")
                cur.close()

        meta = sa.MetaData()
        self.events = sa.Table(
            "andon_outbox_events",
            meta,
            sa.Column("id", sa.String(36), primary_key=True),
            sa.Column("name", sa.String(100), nullable=False),
            sa.Column("plant", sa.String(64), nullable=False, index=True),
            sa.Column("body", sa.Text, nullable=False),
            sa.Column("source", sa.String(16), nullable=False),
            sa.Column("received_at", sa.Float, nullable=False),
            sa.Column("sent_at", sa.Float, nullable=True),
            sa.Column("confirmed_at", sa.Float, nullable=True, index=True),
            sa.Column("attempts", sa.Integer, nullable=False, default=0),
            sa.Column("last_error", sa.Text, nullable=True),
            sa.Column("dead_at", sa.Float, nullable=True),
            sa.Column("dead_reason", sa.Text, nullable=True),
            sa.Column("first_accepted_at", sa.Float, nullable=True),
        )
        self.signatures = sa.Table(
            "andon_outbox_signatures",
            meta,
            sa.Column("signature", sa.String(80), primary_key=True),
            sa.Column("seen_at", sa.Float, nullable=False, index=True),
        )
        self._lock = threading.Lock() if sqlite else None  # SQLite: one writer at a time, no busy retries
        try:
            meta.create_all(self.engine)
            self._add_missing_columns()
        except Exception as exc:
            raise ServiceError(f"cannot open the gateway outbox at {self._safe_url()}: {exc}") from None

    def _add_missing_columns(self) -> None:
        """An outbox created by an older gateway gets the columns added since (nullable ones)."""
        import sqlalchemy as sa

        have = {c["name"] for c in sa.inspect(self.engine).get_columns(self.events.name)}
        missing = [c for c in self.events.columns if c.name not in have]
        with self._write() as conn:
            for column in missing:
                kind = column.type.compile(dialect=self.engine.dialect)
                conn.execute(sa.text(f"ALTER TABLE {self.events.name} ADD COLUMN {column.name} {kind}"))

    def _safe_url(self) -> str:
        from sqlalchemy.engine import make_url

        return make_url(self.url).render_as_string(hide_password=True)

    @contextmanager
    def _write(self) -> Iterator[Any]:
        """A transaction (serialized on SQLite: one writer at a time, no busy retries)."""
        if self._lock:
            with self._lock, self.engine.begin() as conn:
                yield conn
        else:
            with self.engine.begin() as conn:
                yield conn

    def put(self, event: dict[str, Any], source: str, signature: str | None = None, replay_window: float = 600) -> bool:
        """Persist ``event`` (committed when this returns). Returns False when an event with its id
        is already here (an MES retry). Raises ReplayError for a signature seen before."""
        from sqlalchemy import exc as sa_exc

        try:
            return self._put(event, source, signature, replay_window)
        except sa_exc.DataError as exc:  # the database refuses this value: it never will accept it
            raise DataError(f"the outbox refused the event: {exc.orig!s:.200}") from None
        except sa_exc.DBAPIError as exc:  # away, full, locked, misconfigured: keep the message
            raise OutboxError(f"the outbox at {self._safe_url()} is unavailable: {exc.orig!s:.200}") from None
        except sa_exc.StatementError as exc:  # the driver refused a value before sending it
            if isinstance(exc.orig, ValueError | TypeError):
                raise DataError(f"the outbox refused the event: {exc.orig!s:.200}") from None
            raise OutboxError(f"the outbox at {self._safe_url()} is unavailable: {exc.orig!s:.200}") from None
        except sa_exc.SQLAlchemyError as exc:
            raise OutboxError(f"the outbox at {self._safe_url()} is unavailable: {exc!s:.200}") from None

    def _put(self, event: dict[str, Any], source: str, signature: str | None, replay_window: float) -> bool:
        import sqlalchemy as sa
        from sqlalchemy.exc import IntegrityError

        now = time.time()
        plant = event["resource"].get("plant.id", "")
        with self._write() as conn:
            if signature is not None:
                conn.execute(sa.delete(self.signatures).where(self.signatures.c.seen_at < now - replay_window))
                try:
                    with conn.begin_nested():
                        conn.execute(sa.insert(self.signatures).values(signature=signature, seen_at=now))
                except IntegrityError:
                    raise ReplayError("replayed: this signed request was received before") from None
            try:
                with conn.begin_nested():
                    row = {"id": event["id"], "name": event["event"], "plant": plant, "body": json.dumps(event)}
                    conn.execute(sa.insert(self.events).values(**row, source=source, received_at=now, attempts=0))
            except IntegrityError:
                return False
        return True

    def due(self, limit: int, resend_after: float) -> list[Pending]:
        """Events to send: never sent, or sent ``resend_after`` seconds ago and not confirmed."""
        import sqlalchemy as sa

        t = self.events
        cut = time.time() - resend_after
        q = (
            sa.select(t.c.id, t.c.body, t.c.received_at, t.c.attempts, t.c.sent_at, t.c.first_accepted_at)
            .where(t.c.confirmed_at.is_(None), t.c.dead_at.is_(None), sa.or_(t.c.sent_at.is_(None), t.c.sent_at < cut))
            .order_by(t.c.received_at)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [_pending(r) for r in conn.execute(q)]

    def unconfirmed(self, limit: int, older_than: float) -> list[Pending]:
        """Sent, not yet confirmed, sent more than ``older_than`` seconds ago."""
        import sqlalchemy as sa

        t = self.events
        q = (
            sa.select(t.c.id, t.c.body, t.c.received_at, t.c.attempts, t.c.sent_at, t.c.first_accepted_at)
            .where(
                t.c.confirmed_at.is_(None),
                t.c.dead_at.is_(None),
                t.c.sent_at.is_not(None),
                t.c.sent_at < time.time() - older_than,
            )
            .order_by(t.c.sent_at)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [_pending(r) for r in conn.execute(q)]

    def mark_sent(self, ids: list[str]) -> None:
        import sqlalchemy as sa

        t = self.events
        with self._write() as conn:
            now = time.time()
            first = sa.func.coalesce(t.c.first_accepted_at, now)
            values = {"sent_at": now, "attempts": t.c.attempts + 1, "last_error": None, "first_accepted_at": first}
            conn.execute(sa.update(t).where(t.c.id.in_(ids)).values(**values))

    def mark_failed(self, ids: list[str], error: str) -> None:
        import sqlalchemy as sa

        t = self.events
        with self._write() as conn:
            conn.execute(sa.update(t).where(t.c.id.in_(ids)).values(attempts=t.c.attempts + 1, last_error=error[:500]))

    def mark_dead(self, event_id: str, reason: str) -> None:
        """Park an event the server refuses for good: never sent again, kept with the reason."""
        import sqlalchemy as sa

        t = self.events
        with self._write() as conn:
            open_ = sa.and_(t.c.id == event_id, t.c.confirmed_at.is_(None))
            conn.execute(sa.update(t).where(open_).values(dead_at=time.time(), dead_reason=reason[:1000]))

    def dead(self, limit: int = 100) -> list[dict[str, Any]]:
        """The parked events, newest first: id, name, plant, dead_at, dead_reason."""
        import sqlalchemy as sa

        t = self.events
        q = (
            sa.select(t.c.id, t.c.name, t.c.plant, t.c.dead_at, t.c.dead_reason)
            .where(t.c.dead_at.is_not(None))
            .order_by(t.c.dead_at.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def newest_confirmed(self) -> float:
        """The receipt time of the newest event the server confirmed (0 when none): an event
        received before it that is still unconfirmed was overtaken."""
        import sqlalchemy as sa

        t = self.events
        q = sa.select(sa.func.max(t.c.received_at)).where(t.c.confirmed_at.is_not(None))
        with self.engine.connect() as conn:
            return float(conn.execute(q).scalar() or 0.0)

    def mark_confirmed(self, ids: list[str]) -> None:
        import sqlalchemy as sa

        t = self.events
        with self._write() as conn:
            open_ = sa.and_(t.c.id.in_(ids), t.c.confirmed_at.is_(None))
            conn.execute(sa.update(t).where(open_).values(confirmed_at=time.time()))

    def counts(self) -> dict[str, int]:
        """stored (rows), pending (neither confirmed nor dead), unsent, delivered (confirmed), dead."""
        import sqlalchemy as sa

        t = self.events
        q = sa.select(
            sa.func.count(),
            sa.func.count(t.c.confirmed_at),
            sa.func.sum(sa.case((sa.and_(t.c.sent_at.is_(None), t.c.dead_at.is_(None)), 1), else_=0)),
            sa.func.count(t.c.dead_at),
        )
        with self.engine.connect() as conn:
            total, confirmed, unsent, dead = conn.execute(q).one()
        return {
            "stored": total,
            "pending": total - confirmed - dead,
            "unsent": int(unsent or 0),
            "delivered": confirmed,
            "dead": dead,
        }

    def lags(self, since: float = 0.0) -> list[float]:
        """Seconds from receipt to confirmation of the events confirmed after ``since``."""
        import sqlalchemy as sa

        t = self.events
        done = sa.and_(t.c.confirmed_at.is_not(None), t.c.confirmed_at >= since)
        q = sa.select(t.c.confirmed_at - t.c.received_at).where(done)
        with self.engine.connect() as conn:
            return [float(r[0]) for r in conn.execute(q)]

    def event(self, event_id: str) -> dict[str, Any] | None:
        import sqlalchemy as sa

        t = self.events
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t).where(t.c.id == event_id)).one_or_none()
        return None if row is None else dict(row._mapping)

    def close(self) -> None:
        self.engine.dispose()


def _pending(row: Any) -> Pending:
    return Pending(row.id, json.loads(row.body), row.received_at, row.attempts, row.sent_at, row.first_accepted_at)


class ReplayError(ServiceError):
    """A signed request seen before (HTTP 401)."""


class OutboxError(ServiceError):
    """The outbox database cannot take an event now (HTTP 503; an MQTT message stays unacknowledged)."""
