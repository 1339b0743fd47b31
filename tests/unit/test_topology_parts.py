"""The production topology without starting it: the gateway's forwarder moving to the next API
server, the load balancer skipping a dead backend, and the process plan (what
tests/integration/test_topology.py runs and infra/docker-compose.yml mirrors)."""

from __future__ import annotations

import json
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from andon.gateway.forwarder import Forwarder, api_urls
from andon.gateway.outbox import Outbox
from andon.settings import AndonSettings
from andon.topology import Balancer, Topology, redis_env


def _event(i: int) -> dict[str, Any]:
    resource = {"prefect.resource.id": "andon.plant.plant-a"}
    return {"id": f"00000000-0000-4000-8000-{i:012d}", "event": "mes.sku.introduced",
            "occurred": "2026-11-26T08:00:00+00:00", "resource": resource}  # fmt: skip


def test_api_urls_take_one_or_several() -> None:
    assert api_urls("http://a/api/") == ["http://a/api"]
    assert api_urls(["http://a/api", " http://b/api "]) == ["http://a/api", "http://b/api"]
    with pytest.raises(ValueError, match="no Prefect API URL"):
        api_urls(" , ")


def test_the_forwarder_moves_to_the_next_api_server_when_one_is_away(tmp_path: Path) -> None:
    stored: list[str] = []

    def server(request: httpx.Request) -> httpx.Response:
        if request.url.host == "api-1":
            raise httpx.ConnectError("connection refused", request=request)
        if request.url.host == "api-2" and request.url.path == "/api/events/filter":
            return httpx.Response(200, json={"events": [{"id": i} for i in stored]})
        if request.url.host == "api-2":
            stored.extend(e["id"] for e in json.loads(request.content))
            return httpx.Response(204)
        return httpx.Response(503)  # api-3: a proxy whose server is away

    box = Outbox(f"sqlite:///{tmp_path / 'outbox.db'}")
    for i in range(3):
        box.put(_event(i), "http")
    fw = Forwarder(box, "http://api-1/api,http://api-2/api", confirm_after=0.0)
    fw.client = httpx.Client(transport=httpx.MockTransport(server))
    with pytest.raises(httpx.ConnectError):
        fw.step()  # api-1 is away: nothing lost, the next round goes to api-2
    assert fw.api_url == "http://api-2/api" and fw.stats.failovers == 1
    assert fw.step() == 6  # 3 sent + 3 confirmed
    assert box.counts()["delivered"] == 3 and stored == [_event(i)["id"] for i in range(3)]

    # a 502-504 answer (a load balancer with no server behind it) moves on too; one URL stays put
    fw = Forwarder(box, ["http://api-3/api", "http://api-2/api"])
    fw.client = httpx.Client(transport=httpx.MockTransport(server))
    box.put(_event(9), "http")
    with pytest.raises(RuntimeError, match="503"):
        fw.step()
    assert fw.api_url == "http://api-2/api"
    single = Forwarder(box, "http://api-1/api")
    single._fail_over(httpx.ConnectError("refused"))
    assert single.api_url == "http://api-1/api" and single.stats.failovers == 0


def test_an_event_a_dying_server_marked_as_seen_is_resent_until_the_mark_expires(tmp_path: Path) -> None:
    """prefect-redis marks an event id as seen (5 minutes) before publishing it: a server killed
    in between leaves a mark and no event, and every resend is answered 204 and dropped until the
    mark expires. The forwarder keeps resending for ``park_after`` instead of parking the event
    after ``max_attempts`` (it did, and lost 2 events of 2,000 in benchmarks/topology.py)."""
    marked_until: dict[str, float] = {}
    stored: list[str] = []

    def server(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events/filter"):
            return httpx.Response(200, json={"events": [{"id": i} for i in stored]})
        for e in json.loads(request.content):
            if e["id"] == _event(0)["id"]:
                until = marked_until.setdefault(e["id"], time.monotonic() + 0.6)  # the dead server's mark
                if time.monotonic() < until:
                    continue  # "a duplicate": 204, nothing published
            stored.append(e["id"])
        return httpx.Response(204)

    def drive(park_after: float) -> Outbox:
        marked_until.clear()
        stored.clear()
        box = Outbox(f"sqlite:///{tmp_path / f'outbox-{park_after}.db'}")
        box.put(_event(0), "http")
        time.sleep(0.01)
        box.put(_event(1), "http")  # received after it, confirmed first: event 0 is overtaken
        fw = Forwarder(box, "http://api/api", resend_after=0.05, confirm_after=0.0, max_attempts=2,
                       park_after=park_after)  # fmt: skip
        fw.client = httpx.Client(transport=httpx.MockTransport(server))
        deadline = time.monotonic() + 5
        while box.counts()["pending"] and time.monotonic() < deadline:
            fw.step()
            time.sleep(0.05)
        return box

    before = drive(park_after=0).counts()  # the attempts rule alone: parked while still marked
    assert before["delivered"] == 1 and before["dead"] == 1, before
    box = drive(park_after=2.0)
    assert box.counts()["delivered"] == 2 and box.counts()["dead"] == 0  # late, not lost
    assert stored == [_event(1)["id"], _event(0)["id"]]


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data = self.request.recv(1024)
        self.request.sendall(str(self.server.server_address[1]).encode() + b":" + data)


@pytest.fixture
def echo_servers() -> Iterator[list[socketserver.ThreadingTCPServer]]:
    servers = [socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo) for _ in range(2)]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    yield servers
    for s in servers:
        s.shutdown()
        s.server_close()


def _ask(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        c.sendall(b"hi")
        return c.recv(1024).decode()


def test_the_balancer_spreads_connections_and_skips_a_dead_backend(
    echo_servers: list[socketserver.ThreadingTCPServer],
) -> None:
    ports = [s.server_address[1] for s in echo_servers]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # nothing listens here once closed
    lb = Balancer([("127.0.0.1", ports[0]), ("127.0.0.1", dead), ("127.0.0.1", ports[1])])
    lb.start()
    try:
        answers = [_ask(lb.port) for _ in range(6)]
    finally:
        lb.stop()
    assert set(answers) == {f"{ports[0]}:hi", f"{ports[1]}:hi"}  # both live ones, in turn; never the dead one
    assert set(lb.connections) == set(ports) and sum(lb.connections.values()) == 6 and lb.refused == 0


def test_concurrent_connections_all_find_the_live_backend(echo_servers: list[socketserver.ThreadingTCPServer]) -> None:
    """Many clients at once while one of two backends is dead: every one is served (each
    connection tries every backend; a turn shared between connections sent some to the dead one
    twice, and a worker's websocket got closed unanswered: a retrain run crashed)."""
    from concurrent.futures import ThreadPoolExecutor

    live = echo_servers[0].server_address[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    lb = Balancer([("127.0.0.1", dead), ("127.0.0.1", live)])
    lb.start()
    try:
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda _: _ask(lb.port), range(200)))
    finally:
        lb.stop()
    assert answers == [f"{live}:hi"] * 200 and lb.refused == 0


def test_the_plan_is_the_production_shape(tmp_path: Path) -> None:
    settings = AndonSettings(
        home=tmp_path / "home",
        prefect_database_url="postgresql://u@db:5432/prefect",
        mlflow_backend_store_uri="postgresql://u@db:5432/mlflow",
        gateway_outbox_url="postgresql://u@db:5432/gateway",
        object_store_url="s3://andon",
        mes_secret="x" * 32,
        PREFECT_API_AUTH_STRING="ops:prefect-credential",
        MLFLOW_TRACKING_USERNAME="andon",
        MLFLOW_TRACKING_PASSWORD="mlflow-credential",
    )
    topo = Topology(settings, "redis://cache:6379/4", ["plant-a", "plant-b"], api_servers=2)
    plan = {p.name: p for p in topo.plan()}
    assert list(plan) == ["prefect-api-1", "prefect-api-2", "prefect-services", "mlflow", "worker-plant-a",
                          "worker-plant-b", "gateway"]  # fmt: skip
    for name in ("prefect-api-1", "prefect-api-2", "prefect-services"):
        env = plan[name].env
        assert env.items() >= redis_env("redis://cache:6379/4").items(), name
        assert env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] == "postgresql+asyncpg://u@db:5432/prefect"
        assert env["PREFECT_SERVER_DATABASE_MIGRATE_ON_START"] == "false"
        assert env["PREFECT_SERVER_API_AUTH_STRING"] == "ops:prefect-credential"
    assert redis_env("redis://cache:6379/4")["PREFECT_REDIS_MESSAGING_HOST"] == "cache"
    assert all("--no-services" in plan[f"prefect-api-{i}"].command for i in (1, 2))
    assert plan["prefect-services"].command[-3:] == ["server", "services", "start"]
    for plant in ("plant-a", "plant-b"):
        worker = plan[f"worker-{plant}"]
        assert worker.command[-4:] == ["--plant", plant, "--prefect-api-url", topo.prefect_api_url]
        assert worker.env["PREFECT_API_URL"] == topo.prefect_api_url  # the load balancer, for the flow runs too
    gateway = plan["gateway"].env
    assert gateway["ANDON_GATEWAY_API_URLS"] == ",".join(topo.api_urls)  # both servers, no load balancer
    assert not any(k.startswith(("AWS_", "MLFLOW_")) for k in gateway)  # the gateway holds no store credential
    assert (
        "--artifacts-destination" in plan["mlflow"].command and "s3://andon/mlflow-artifacts" in plan["mlflow"].command
    )
    assert "secret" not in " ".join(c for p in plan.values() for c in p.command).lower()
