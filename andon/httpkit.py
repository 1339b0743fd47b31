"""What Andon's HTTP services share (the scoring service and the MES gateway): an error that
becomes an HTTP answer, a body read with a hard size limit, and one way to run a service with
uvicorn, in the foreground (``run_server``) or on a background thread (``run_in_thread``: tests,
benchmarks, embedding). Import only to serve: it imports Starlette.

Every door is hostile-input safe, stalled clients included (``ServerLimits``):

- a request's line and headers must arrive within ``header_timeout_s`` of the connection (or of
  the first byte of the next request on a kept-alive connection), else the connection is closed
  (uvicorn has no header-read timeout: a half-sent header held a socket open forever);
- its body within ``body_timeout_s`` of the headers, else 408 and the connection is closed;
- an idle kept-alive connection is closed after ``keep_alive_s``;
- at most ``max_connections`` connections (and never closer than ``FD_RESERVE`` to the process's
  file-descriptor limit): a new connection beyond it closes the oldest one still waiting for its
  headers, so stalled sockets cannot lock out valid clients; if every connection is busy with a
  request, the new request gets 503 (uvicorn's ``limit_concurrency``);
- a client that disconnects or stalls costs one log line, never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from starlette.requests import ClientDisconnect, Request

from andon.errors import AndonError

log = logging.getLogger("andon.http")

FD_RESERVE = 64
"""File descriptors kept free for what the service opens itself (databases, logs, the broker)."""
CLOSING_SLACK = 16
"""Connections over the cap tolerated while evicted ones finish closing (below ``FD_RESERVE``)."""
BODY_STATE = "andon.body"
"""The scope key of the body deadline's state (read by ``read_capped``)."""


class Rejected(AndonError):
    """A request the service answers with an HTTP error."""

    def __init__(self, status: int, detail: str, retry_after_s: int | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.retry_after_s = retry_after_s  # sent as Retry-After (429, 503)

    @property
    def headers(self) -> dict[str, str] | None:
        return {"Retry-After": str(self.retry_after_s)} if self.retry_after_s is not None else None


@dataclass(frozen=True)
class ServerLimits:
    """How long and how many: what a stalled or flooding client may hold (see the module doc)."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keep_alive_s: int = 5
    max_connections: int = 1000

    def connection_cap(self) -> int:
        """``max_connections``, lowered to stay ``FD_RESERVE`` below the soft fd limit."""
        try:
            import resource

            soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        except (ImportError, OSError, ValueError):
            return self.max_connections
        if soft == resource.RLIM_INFINITY:
            return self.max_connections
        return max(8, min(self.max_connections, soft - FD_RESERVE))


def _client(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else "a client"


async def read_capped(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes (from
    Content-Length, or while streaming when the client did not say); 408 when it does not arrive
    within the body deadline; 400 when the client disconnects first (one log line)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise Rejected(413, f"request of {int(declared)} bytes is over the limit of {limit} bytes")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise Rejected(413, f"request body is over the limit of {limit} bytes")
    except ClientDisconnect:
        state = request.scope.get(BODY_STATE)
        if state is not None and state.timed_out:
            log.warning("%s: body incomplete after %.0f s (%d bytes): 408", _client(request), state.timeout, len(body))
            raise Rejected(408, f"the request body did not arrive within {state.timeout:.0f} s") from None
        log.warning("%s disconnected after %d bytes of the request body", _client(request), len(body))
        raise Rejected(400, "the client disconnected before the end of the body") from None
    return bytes(body)


class _BodyState:
    __slots__ = ("timed_out", "timeout")

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.timed_out = False


class GuardMiddleware:
    """ASGI middleware: a deadline on reading the request body (``body_timeout_s`` from the
    headers; the app then sees a disconnect, ``read_capped`` answers 408 and the connection is
    closed) and one log line, not a traceback, for a client that went away mid-request."""

    def __init__(self, app: Any, body_timeout_s: float) -> None:
        self.app = app
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout_s
        state = _BodyState(self.body_timeout_s)
        scope[BODY_STATE] = state
        body_done = False

        async def timed_receive() -> dict[str, Any]:
            nonlocal body_done
            if body_done:  # the body is in: what follows is a wait for a disconnect, not bounded here
                return dict(await receive())
            try:
                message = dict(await asyncio.wait_for(receive(), max(0.0, deadline - loop.time())))
            except TimeoutError:
                state.timed_out = True
                body_done = True
                return {"type": "http.disconnect"}
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def closing_send(message: dict[str, Any]) -> None:
            if state.timed_out and message["type"] == "http.response.start":  # the rest of the body is unread
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, timed_receive, closing_send)
        except ClientDisconnect:
            client = scope.get("client")
            log.warning(
                "%s disconnected during %s %s", client and f"{client[0]}:{client[1]}", scope["method"], scope["path"]
            )


def _guarded_protocol(limits: ServerLimits, cap: int) -> type:
    """uvicorn's HTTP protocol with a header deadline and eviction of stalled connections."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    base: Any = AutoHTTPProtocol

    class GuardedHTTP(base):
        _header_timer: asyncio.TimerHandle | None = None
        _timer_cycle: object = None
        _opened = 0.0

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._opened = time.monotonic()
            self._await_headers()
            if len(self.connections) > cap and sum(1 for c in self.connections if not c.transport.is_closing()) > cap:
                self._evict_one()

        def data_received(self, data: bytes) -> None:
            idle = self.cycle is None or self.cycle.response_complete
            if idle and (self._header_timer is None or self._timer_cycle is not self.cycle):
                self._await_headers()  # the first bytes of a next request: its headers get a deadline
            super().data_received(data)

        def connection_lost(self, exc: Exception | None) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None
            super().connection_lost(exc)

        def _waiting(self) -> bool:
            """No request in progress: waiting for (more of) a request's headers, or idle."""
            return self.cycle is None or self.cycle.response_complete

        def _await_headers(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            cycle = self._timer_cycle = self.cycle

            def expire() -> None:
                self._header_timer = None
                if self.cycle is cycle and not self.transport.is_closing():  # no new request got its headers
                    log.warning(
                        "%s: no complete request headers within %.0f s: closed", _peer(self), limits.header_timeout_s
                    )
                    self.transport.close()

            self._header_timer = self.loop.call_later(limits.header_timeout_s, expire)

        def _evict_one(self) -> None:
            waiting = [
                c
                for c in self.connections
                if c is not self and not c.transport.is_closing() and getattr(c, "_waiting", lambda: False)()
            ]
            if not waiting:
                return  # every connection is busy with a request: limit_concurrency answers 503
            # first the connections that never sent a whole request (stalled or slow clients), oldest
            # first; an idle kept-alive connection of a working client only when there are none
            oldest = min(waiting, key=lambda c: (c.cycle is not None, c._opened))
            log.warning(
                "%d connections (the cap): closed %s, waiting since %.0f s",
                len(self.connections),
                _peer(oldest),
                time.monotonic() - oldest._opened,
            )
            oldest.transport.close()

    return GuardedHTTP


def _peer(protocol: Any) -> str:
    client = getattr(protocol, "client", None)
    return f"{client[0]}:{client[1]}" if client else "a client"


def server_config(app: Any, host: str, port: int, limits: ServerLimits | None = None, **options: Any) -> Any:
    """The uvicorn Config every Andon service runs with (``options`` go to uvicorn)."""
    import uvicorn

    limits = limits or ServerLimits()
    cap = limits.connection_cap()
    return uvicorn.Config(
        GuardMiddleware(app, limits.body_timeout_s),
        host=host,
        port=port,
        http=_guarded_protocol(limits, cap),
        timeout_keep_alive=limits.keep_alive_s,
        # 503 once connections busy with requests fill the cap (the slack: evicted ones still closing)
        limit_concurrency=cap + CLOSING_SLACK,
        log_level="warning",
        access_log=False,
        **options,
    )


def run_server(app: Any, host: str, port: int, limits: ServerLimits | None = None, sock: Any = None) -> None:
    """Serve ``app`` in the foreground until interrupted (``andon serve``, ``andon gateway``);
    on ``sock``, a listening socket shared with other serving processes, when given."""
    import uvicorn

    uvicorn.Server(server_config(app, host, port, limits)).run(sockets=[sock] if sock is not None else None)


@contextmanager
def run_in_thread(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 0,
    name: str = "andon-http",
    on_fail: Callable[[], None] = lambda: None,
    limits: ServerLimits | None = None,
) -> Iterator[str]:
    """Serve ``app`` like ``run_server`` on a background thread; yields the base URL, and shuts
    the server down on exit (``on_fail`` runs when it does not start)."""
    import uvicorn

    server = uvicorn.Server(server_config(app, host, port, limits))
    thread = threading.Thread(target=server.run, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            on_fail()
            raise AndonError(f"{name} did not start on {host}:{port}")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
