"""Hostile input at the MES gateway's doors, through real components: signed HTTP requests to
the gateway on uvicorn (loopback), MQTT through the local Mosquitto, the outbox on SQLite and on
PostgreSQL, and an events server over real HTTP that stores into PostgreSQL (JSONB refuses a NUL
as Prefect on PostgreSQL does). Every bad message is a counted 4xx or a counted refusal, never a
500, a stalled queue or an event lost behind it.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import mes_message, wait_until

from andon.config import load_plant
from andon.errors import AndonError, ConfigError
from andon.gateway.app import Gateway, create_app
from andon.gateway.forwarder import Forwarder
from andon.gateway.outbox import Outbox, OutboxError
from andon.gateway.schemas import parse_message, to_event
from andon.gateway.signing import headers
from andon.httpkit import run_in_thread

pytestmark = pytest.mark.integration

SECRET = "security-test-secret-0123456789abcdef"  # 36 bytes
REPO = Path(__file__).resolve().parents[2]


_msg = mes_message  # one valid message, shared with the other gateway tests (conftest)


def _dumps(raw: Any) -> bytes:
    return json.dumps(raw).encode()


_DEEP = b"[" * 100_000 + b"]" * 100_000
HOSTILE: dict[str, bytes] = {
    "superscript two as time": _dumps(_msg(occurred_at="²")),
    "400 digits as time": _dumps(_msg(occurred_at="1" * 400)),
    "400-digit number as time": _dumps(_msg()).replace(b'"2026-11-26T08:00:00Z"', b"1" * 400),
    "year 1 at +14:00": _dumps(_msg(occurred_at="0001-01-01T00:00:00+14:00")),
    "year 9999 at -14:00": _dumps(_msg(occurred_at="9999-12-31T23:59:59-14:00")),
    "NaN as time": _dumps(_msg()).replace(b'"2026-11-26T08:00:00Z"', b"NaN"),
    "deep JSON": _DEEP,
    "deep JSON in a field": _dumps(_msg()).replace(b'"SKU-1"', _DEEP),
    "5000-digit integer": _dumps(_msg()).replace(b'"SKU-1"', b"9" * 5000),
    "int message_id": _dumps(_msg(message_id=12345)),
    "int plant": _dumps(_msg(plant=7)),
    "int sku": _dumps(_msg(sku=42)),
    "list as type": _dumps(_msg(type=["sku.introduced"])),
    "object as type": _dumps(_msg(type={"a": 1})),
    "null body": b"null",
    "a string body": b'"sku.introduced"',
    "bad UTF-8": _dumps(_msg(sku="\u00e9")).replace("\u00e9".encode(), b"\xff\xfe"),
    "lone surrogate": _dumps(_msg()).replace(b'"SKU-1"', b'"\\ud800"'),
    "NUL in message_id": _dumps(_msg(message_id="MES-\u0000-1")),
    "NUL in description": _dumps(_msg(description="a\u0000b")),
    "ESC in description": _dumps(_msg(description="\u001b[2J cleared")),
    "newline in line id": _dumps(_msg(line="line-1\nline-2")),
    "NUL in change": _dumps(_msg(type="line.reconfigured", change="x\u0000")),
    "NUL as mix key": _dumps(
        {k: v for k, v in _msg(type="product_mix.changed").items() if k != "sku"}
        | {"mix": {"\u0000": 1.0}, "previous_mix": {"A": 1.0}}
    ),
    "empty mix key": _dumps(
        {k: v for k, v in _msg(type="product_mix.changed").items() if k != "sku"}
        | {"mix": {"": 1.0}, "previous_mix": {"A": 1.0}}
    ),
    "1001 mix keys": _dumps(
        {k: v for k, v in _msg(type="product_mix.changed").items() if k != "sku"}
        | {"mix": {f"S{i}": 1 / 1001 for i in range(1001)}, "previous_mix": {"A": 1.0}}
    ),
    "an unknown key": _dumps(_msg() | {"\u0000key": 1}),
}


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, str]]:
    box = Outbox(f"sqlite:///{tmp_path_factory.mktemp('gw') / 'outbox.db'}")
    gw = Gateway(box, {"plant-a": load_plant("plant-a")}, SECRET)
    with run_in_thread(create_app(gw), name="andon-gateway") as url:
        yield gw, url


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_body_is_a_counted_4xx_and_enqueues_nothing(gateway_url: tuple[Gateway, str], case: str) -> None:
    gw, url = gateway_url
    body = HOSTILE[case]
    stored, refused = gw.outbox.counts()["stored"], sum(gw.rejected.values())
    resp = httpx.post(f"{url}/v1/mes/events", content=body, headers=headers(body, SECRET), timeout=30)
    assert 400 <= resp.status_code < 500, (case, resp.status_code, resp.text[:300])
    detail = resp.json()["detail"]
    assert detail and "Traceback" not in detail and "\x00" not in detail and "\x1b" not in detail
    assert sum(gw.rejected.values()) == refused + 1  # counted
    assert gw.outbox.counts()["stored"] == stored  # nothing enqueued


def test_free_text_keeps_tabs_and_line_breaks(gateway_url: tuple[Gateway, str]) -> None:
    _gw, url = gateway_url
    raw = {k: v for k, v in _msg(type="line.reconfigured").items() if k != "sku"}
    body = _dumps(raw | {"change": "new fixture:\n\tstation 3\r\n"})
    resp = httpx.post(f"{url}/v1/mes/events", content=body, headers=headers(body, SECRET), timeout=30)
    assert resp.status_code == 202, resp.text
    metrics = httpx.get(f"{url}/metrics").text
    assert "andon_gateway_events_rejected_total" in metrics and "andon_gateway_events_dead 0" in metrics


# ------------------------------------------------------------------------------ the secret


def test_a_short_mes_secret_is_refused_at_settings_load(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from andon.settings import get_settings, reset_settings

    for short in ("x", "s3cret", "a" * 31, "é" * 15):  # bytes, not characters: 15 x é is 30 bytes
        monkeypatch.setenv("ANDON_MES_SECRET", short)
        reset_settings()
        with pytest.raises(ConfigError, match=r"ANDON_MES_SECRET.*at least 32"):
            get_settings()
        with pytest.raises(AndonError, match="at least 32"):
            Gateway(Outbox(f"sqlite:///{tmp_path / 'o.db'}"), {}, short)
    monkeypatch.setenv("ANDON_MES_SECRET", "é" * 16)  # 32 bytes
    reset_settings()
    secret = get_settings().mes_secret
    assert secret is not None and Gateway(Outbox(f"sqlite:///{tmp_path / 'o.db'}"), {}, secret.get_secret_value())


# ------------------------------------------------------------------------------ MQTT


def _mosquitto() -> None:
    try:
        with socket.create_connection(("127.0.0.1", 1883), timeout=2):
            pass
    except OSError as exc:
        pytest.skip(f"no MQTT broker on 127.0.0.1:1883 ({exc})")


@pytest.fixture
def publisher() -> Iterator[Any]:
    import paho.mqtt.client as mqtt

    _mosquitto()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"andon-poisoner-{uuid.uuid4().hex[:6]}")
    pub.connect("127.0.0.1", 1883)
    pub.loop_start()
    yield pub
    pub.loop_stop()
    pub.disconnect()


CRASHERS: list[bytes] = [  # each raised past the old bridge's `except Rejected`, unacknowledged
    _DEEP,  # RecursionError in the JSON decoder
    _dumps(_msg(plant="plant-b", occurred_at="0001-01-01T00:00:00+14:00")),  # OverflowError in UTC
    b'{"type": "sku.introduced", "plant": "plant-b", "sku": ' + _DEEP + b"}",
    _dumps(_msg(plant="plant-b", occurred_at="9999-12-31T23:59:59-14:00")),
]
OTHERS: list[bytes] = [  # refused before the fix too (or, for the NUL, accepted)
    b'{"type": "sku.introduced", "plant": "plant-b", "sku": "\xff"}',  # bad UTF-8
    _dumps(_msg(plant="plant-b", description="nul\u0000")),
    _dumps(_msg(plant="plant-b", message_id=7)),  # an int field
    _dumps(_msg(plant="plant-b")) + b"trailing",
    b"9" * 5000,  # an integer too long to convert
    b"[]",
    _dumps(_msg(plant="plant-a")),  # another plant's message on plant-b's topic
    _dumps(_msg(plant="plant-b", mix={"A": 1.0})),
]
POISON = [CRASHERS[i // 2 % len(CRASHERS)] if i % 2 == 0 else OTHERS[i // 2 % len(OTHERS)] for i in range(50)]


def test_poisoned_mqtt_never_stalls_delivery(tmp_path: Path, publisher: Any) -> None:
    """50 poison messages, each refused, acknowledged and counted; a valid one behind them gets
    through; after a reconnect the broker re-delivers none of them (they were acknowledged).
    Before the fix a RecursionError or OverflowError left a message unacknowledged, and after 20
    of them Mosquitto stopped delivering anything to the gateway."""
    from andon.gateway.mqtt import MqttBridge, topic_prefix

    box = Outbox(f"sqlite:///{tmp_path / 'outbox.db'}")
    plants = {p: load_plant(p) for p in ("plant-a", "plant-b")}
    gw = Gateway(box, plants, SECRET)
    client_id = f"andon-poison-{uuid.uuid4().hex[:6]}"
    topic = f"{topic_prefix(plants['plant-b'])}/line-1/sku"
    bridge = MqttBridge(gw, "mqtt://127.0.0.1:1883", client_id=client_id)
    bridge.start()
    try:
        for i in range(50):
            publisher.publish(topic, POISON[i], qos=1).wait_for_publish(10)
        valid = _msg("after-poison", plant="plant-b")
        publisher.publish(topic, json.dumps(valid), qos=1).wait_for_publish(10)
        wait_until(lambda: bridge.received == 1, what="the valid message behind 50 poison ones")
    finally:
        bridge.stop()
    assert bridge.refused == 50 and bridge.unstored == 0
    assert sum(gw.rejected.values()) == 50  # counted at the gateway, by reason
    assert {"malformed", "schema", "unknown_plant"} <= set(gw.rejected)
    (due,) = box.due(10, 30)
    assert due.event["payload"]["sku"] == "SKU-after-poison"

    # the same session again: the broker has nothing unacknowledged to re-deliver
    again = MqttBridge(gw, "mqtt://127.0.0.1:1883", client_id=client_id)
    again.start()
    try:
        publisher.publish(topic, json.dumps(_msg("sentinel", plant="plant-b")), qos=1).wait_for_publish(10)
        wait_until(lambda: again.received == 1, what="the sentinel")
    finally:
        again.stop()
    assert again.refused == 0 and box.counts()["stored"] == 2


def test_only_an_outbox_that_is_away_leaves_an_mqtt_message_on_the_broker(tmp_path: Path, publisher: Any) -> None:
    from andon.gateway.mqtt import MqttBridge, topic_prefix

    box = Outbox(f"sqlite:///{tmp_path / 'outbox.db'}")
    plants = {"plant-b": load_plant("plant-b")}
    gw = Gateway(box, plants, SECRET)
    client_id = f"andon-away-{uuid.uuid4().hex[:6]}"
    topic = f"{topic_prefix(plants['plant-b'])}/line-1/sku"
    put = box.put

    def away(*_args: Any, **_kw: Any) -> bool:
        raise OutboxError("the outbox database is away (simulated)")

    box.put = away  # type: ignore[method-assign]
    bridge = MqttBridge(gw, "mqtt://127.0.0.1:1883", client_id=client_id)
    bridge.start()
    try:
        publisher.publish(topic, json.dumps(_msg("kept", plant="plant-b")), qos=1).wait_for_publish(10)
        wait_until(lambda: bridge.unstored == 1, what="the message that could not be stored")
    finally:
        bridge.stop()
    assert bridge.refused == 0 and box.counts()["stored"] == 0

    box.put = put  # type: ignore[method-assign]
    back = MqttBridge(gw, "mqtt://127.0.0.1:1883", client_id=client_id)
    back.start()
    try:  # unacknowledged, so the broker re-delivers it to the same session
        wait_until(lambda: back.received == 1, what="the re-delivered message")
    finally:
        back.stop()
    (due,) = box.due(10, 30)
    assert due.event["payload"]["sku"] == "SKU-kept"


def test_the_mqtt_password_is_never_printed_at_start(tmp_path: Path) -> None:
    _mosquitto()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "ANDON_HOME": str(tmp_path / "home"),
        "ANDON_MES_SECRET": SECRET,
        "ANDON_PREFECT_API_URL": "http://127.0.0.1:9/api",  # nothing there: the forwarder just waits
    }
    password = f"pw-{uuid.uuid4().hex}"
    cmd = [sys.executable, "-m", "andon.cli", "gateway", "--port", str(port)]
    cmd += ["--mqtt", f"mqtt://andon:{password}@127.0.0.1:1883"]
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
    reader.start()
    try:
        wait_until(lambda: any("MES gateway on" in line for line in lines) or proc.poll() is not None, 120, "start-up")
        wait_until(lambda: _listening(port) or proc.poll() is not None, 60, "the gateway's port")
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30).status_code == 200
    finally:
        proc.terminate()
        proc.wait(30)
        reader.join(10)
    out = "".join(lines)
    assert "MES gateway on" in out, out[-2000:]
    assert password not in out and "mqtt://andon:***@127.0.0.1:1883" in out


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


# ------------------------------------------------------------------------------ the forwarder


class _EventsServer:
    """A real HTTP events endpoint shaped like Prefect's (``POST /events``, ``POST
    /events/filter``) that stores each posted batch in one PostgreSQL transaction as JSONB, as
    Prefect on PostgreSQL does: a NUL anywhere fails the whole batch. ``fail_with`` makes every
    POST answer that status (an outage)."""

    def __init__(self, db_url: str | None = None, fail_with: int | None = None, lose_sku: str = "") -> None:
        self.db_url, self.fail_with, self.lose_sku = db_url, fail_with, lose_sku
        self.posts: list[tuple[float, int]] = []  # (monotonic time, events in the request)
        self.bodies: list[Any] = []
        if db_url:
            import psycopg2

            with psycopg2.connect(db_url) as conn, conn.cursor() as cur:
                cur.execute("create table if not exists events (id text primary key, body jsonb not null)")

    def app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse, Response
        from starlette.routing import Route

        async def create(request: Request) -> Response:
            events = json.loads(await request.body())
            self.posts.append((time.monotonic(), len(events)))
            self.bodies.append(events)
            if self.fail_with:
                return Response(status_code=self.fail_with)
            for i, e in enumerate(events):  # Prefect validates the batch first: one bad event, 422 for all
                try:
                    datetime.fromisoformat(e["occurred"])
                except (KeyError, TypeError, ValueError):
                    return JSONResponse({"detail": [{"loc": ["body", i, "occurred"], "msg": "invalid"}]}, 422)
            import psycopg2

            try:
                with psycopg2.connect(self.db_url) as conn, conn.cursor() as cur:
                    for e in events:
                        if self.lose_sku and e["payload"].get("sku") == self.lose_sku:
                            continue  # taken (204) and silently never stored
                        cur.execute(
                            "insert into events values (%s, %s::jsonb) on conflict do nothing", (e["id"], json.dumps(e))
                        )
            except psycopg2.Error as exc:
                return JSONResponse({"detail": str(exc).strip()}, status_code=500)
            return Response(status_code=204)

        async def filter_(request: Request) -> Response:
            import psycopg2

            ids = (await request.json())["filter"]["id"]["id"]
            with psycopg2.connect(self.db_url) as conn, conn.cursor() as cur:
                cur.execute("select body from events where id = any(%s)", (ids,))
                return JSONResponse({"events": [r[0] for r in cur.fetchall()]})

        return Starlette(
            routes=[Route("/events", create, methods=["POST"]), Route("/events/filter", filter_, methods=["POST"])]
        )


def _event(i: int | str, **extra: Any) -> dict[str, Any]:
    return to_event(parse_message(_msg(i, **extra)), load_plant("plant-a"))


def test_a_poison_event_is_parked_dead_and_never_holds_back_the_others(
    postgres_database: Callable[[str], str], tmp_path: Path
) -> None:
    """Poison events that got into the outbox (written before the gateway refused them) between
    valid ones: a NUL (parked before it is sent: Prefect on PostgreSQL takes it, then fails every
    flush around it), a lone surrogate (it cannot even be encoded: the whole batch failed to
    send) and a malformed time that the server refuses with 422 for the whole batch (found by
    sending one by one, parked with the server's answer). Every valid event is delivered and
    confirmed. Before the fix the batch failed for ever and nothing was delivered."""
    server = _EventsServer(postgres_database("events"))
    box = Outbox(f"sqlite:///{tmp_path / 'outbox.db'}")
    valid = [_event(i) for i in range(10)]
    nul, surrogate, bad_time = _event(97), _event(98), _event(99)
    nul["payload"]["description"] = "written by an older gateway\u0000"
    surrogate["payload"]["description"] = "half a character: \ud800"
    bad_time["occurred"] = "yesterday"
    for e in [*valid[:4], nul, *valid[4:7], surrogate, bad_time, *valid[7:]]:
        assert box.put(e, "http")
    with run_in_thread(server.app(), name="events") as url:
        forwarder = Forwarder(box, url, confirm_after=0.0, min_backoff=0.1, max_backoff=0.5)
        forwarder.start()
        try:
            wait_until(lambda: box.counts()["delivered"] == 10 and box.counts()["dead"] == 3, what="delivery")
        finally:
            forwarder.stop()
    assert box.counts() == {"stored": 13, "pending": 0, "unsent": 0, "delivered": 10, "dead": 3}
    reasons = {d["id"]: d["dead_reason"] for d in box.dead()}
    assert "NUL" in reasons[nul["id"]] and "never sent" in reasons[nul["id"]]
    assert "UnicodeEncodeError" in reasons[surrogate["id"]] and "never sent" in reasons[surrogate["id"]]
    assert (
        reasons[bad_time["id"]].startswith("refused by the server: HTTP 422") and "occurred" in reasons[bad_time["id"]]
    )
    assert forwarder.stats.dead == 3 and box.due(100, resend_after=0) == []  # never sent again
    sent_ids = {e["id"] for body in server.bodies for e in body}
    assert nul["id"] not in sent_ids and surrogate["id"] not in sent_ids


def test_an_event_the_store_never_shows_is_parked_once_others_are_confirmed(
    postgres_database: Callable[[str], str], tmp_path: Path
) -> None:
    """A poison the forwarder cannot recognize and the server takes (204) but never stores: it
    is resent (one per request) and, once events sent after it are confirmed, parked after
    ``max_attempts``; the others are delivered. Before: resent every ``resend_after`` for ever.
    (``park_after=0``: the attempts rule alone; the wait that outlives Prefect's Redis
    de-duplication, 6 minutes by default, is tested in tests/unit/test_topology_parts.py.)"""
    server = _EventsServer(postgres_database("events"), lose_sku="SKU-lost")
    box = Outbox(f"sqlite:///{tmp_path / 'outbox.db'}")
    lost = _event("lost")
    for e in [lost, *(_event(i) for i in range(5))]:
        box.put(e, "http")
    with run_in_thread(server.app(), name="events") as url:
        forwarder = Forwarder(
            box, url, resend_after=0.2, confirm_after=0.0, max_attempts=3, min_backoff=0.1, park_after=0
        )
        forwarder.start()
        try:
            wait_until(lambda: box.counts()["delivered"] == 5 and box.counts()["dead"] == 1, what="delivery")
        finally:
            forwarder.stop()
    (dead,) = box.dead()
    assert dead["id"] == lost["id"] and "never confirmed by the server after 3 attempts" in dead["dead_reason"]
    assert sum(1 for body in server.bodies for e in body if e["id"] == lost["id"]) == 3


def test_a_poison_event_parked_on_a_postgres_outbox(postgres_database: Callable[[str], str]) -> None:
    """The same with the outbox itself on PostgreSQL (the production configuration): the dead
    columns exist there too, and an outbox from an older gateway gets them added."""
    import psycopg2

    url = postgres_database("outbox")
    with psycopg2.connect(url) as conn, conn.cursor() as cur:  # the table as the previous release made it
        cur.execute(
            "create table andon_outbox_events (id varchar(36) primary key, name varchar(100) not null, "
            "plant varchar(64) not null, body text not null, source varchar(16) not null, "
            "received_at float not null, sent_at float, confirmed_at float, attempts integer not null, "
            "last_error text)"
        )
    box = Outbox(url)
    server = _EventsServer(postgres_database("events"))
    poison = _event(1)
    poison["payload"]["sku"] = "\u0000"
    for e in (_event(0), poison, _event(2)):
        box.put(e, "mqtt")
    with run_in_thread(server.app(), name="events") as api:
        forwarder = Forwarder(box, api, confirm_after=0.0, min_backoff=0.1, max_backoff=0.5)
        forwarder.start()
        try:
            wait_until(lambda: box.counts()["delivered"] == 2 and box.counts()["dead"] == 1, what="delivery")
        finally:
            forwarder.stop()
    assert [d["id"] for d in box.dead()] == [poison["id"]]


def test_new_events_do_not_cut_the_backoff_short(tmp_path: Path) -> None:
    """During an outage the forwarder tries at most once per backoff interval, however many
    events arrive (before the fix every new event woke it: 119 failures in 50 s)."""
    server = _EventsServer(fail_with=503)
    box = Outbox(f"sqlite:///{tmp_path / 'outbox.db'}")
    with run_in_thread(server.app(), name="failing-events") as url:
        forwarder = Forwarder(box, url, min_backoff=0.5, max_backoff=2.0)
        forwarder.start()
        started = time.monotonic()
        try:
            for i in range(60):
                box.put(_event(i), "http")
                forwarder.wake()
                time.sleep(0.05)
            wait_until(lambda: len(server.posts) >= 3, what="three attempts")
        finally:
            forwarder.stop()
        elapsed = time.monotonic() - started
    attempts = [t for t, _n in server.posts]
    # the intervals are 0.5, 1, 2, 2... s: never more attempts than 0.5-s intervals in the time taken
    assert len(attempts) <= 1 + elapsed / 0.5, (len(attempts), elapsed)
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert min(gaps) >= 0.45, gaps  # each retry waited out its backoff (a lower bound: load only lengthens it)
    assert box.counts()["pending"] == 60 and box.counts()["dead"] == 0  # an outage parks nothing


@pytest.mark.slow
def test_a_nul_event_loses_nothing_on_prefect_with_postgres(
    postgres_database: Callable[[str], str], tmp_path: Path
) -> None:
    """The production store for real: a Prefect server on PostgreSQL. A NUL event in the outbox
    between 20 valid ones: all 20 reach Prefect's event store, the NUL one is parked dead. Before
    the fix Prefect answered 204, failed every flush that held the NUL and dropped the valid
    events flushed with it (20 acknowledged events never stored)."""
    import psycopg2

    db = postgres_database("prefect")
    with psycopg2.connect(db) as conn, conn.cursor() as cur:
        cur.execute("create extension if not exists pg_trgm")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": db.replace("postgresql://", "postgresql+asyncpg://", 1),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": "0.5",
        **{
            f"PREFECT_SERVER_SERVICES_{name}_ENABLED": "false"
            for name in (
                "SCHEDULER",
                "LATE_RUNS",
                "FOREMAN",
                "PAUSE_EXPIRATIONS",
                "CANCELLATION_CLEANUP",
                "REPOSSESSOR",
            )
        },
    }
    prefect = str(Path(sys.executable).parent / "prefect")
    cmd = [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    log = (tmp_path / "prefect.log").open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                if httpx.get(f"{api}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "prefect.log").read_text()[-3000:]
            time.sleep(0.5)
        box = Outbox(f"sqlite:///{tmp_path / 'outbox.db'}")
        valid = [_event(i) for i in range(20)]
        nul = _event(99)
        nul["payload"]["description"] = "written by an older gateway\u0000"
        for e in [*valid[:10], nul, *valid[10:]]:
            box.put(e, "http")
        forwarder = Forwarder(box, api, resend_after=5, confirm_after=0.5, max_backoff=1.0)
        forwarder.start()
        try:
            wait_until(
                lambda: box.counts()["delivered"] == 20 and box.counts()["dead"] == 1, 180, "delivery to Prefect"
            )
        finally:
            forwarder.stop()
        body = {"filter": {"id": {"id": [e["id"] for e in valid]}, "occurred": {"since": "2026-01-01T00:00:00Z"}}}
        stored = httpx.post(f"{api}/events/filter", json=body | {"limit": 50}, timeout=30).json()["events"]
        assert sorted(e["id"] for e in stored) == sorted(e["id"] for e in valid)
        assert "NUL" in box.dead()[0]["dead_reason"]
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(60)
        log.close()
