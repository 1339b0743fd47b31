"""What Andon's HTTP services share (the scoring service and the MES gateway): an error that
becomes an HTTP answer, a body read with a hard size limit, and running an ASGI app on a
background thread (tests, benchmarks, embedding). Import only to serve: it imports Starlette."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from starlette.requests import Request

from andon.errors import AndonError


class Rejected(AndonError):
    """A request the service answers with an HTTP error."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


async def read_capped(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes (from
    Content-Length, or while streaming when the client did not say)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise Rejected(413, f"request of {int(declared)} bytes is over the limit of {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise Rejected(413, f"request body is over the limit of {limit} bytes")
    return bytes(body)


@contextmanager
def run_in_thread(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 0,
    name: str = "andon-http",
    on_fail: Callable[[], None] = lambda: None,
) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a background thread; yields the base URL, and shuts the
    server down on exit (``on_fail`` runs when it does not start)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False))
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
