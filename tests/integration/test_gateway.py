"""The MES gateway for real: signed requests over HTTP, the outbox on SQLite and on PostgreSQL,
the forwarder delivering to (and confirming with) the session's Prefect server, through an
outage, and MES messages from the local Mosquitto broker."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from conftest import mes_message, wait_until

from andon.config import load_plant
from andon.gateway.app import Gateway, create_app
from andon.gateway.forwarder import Forwarder
from andon.gateway.outbox import Outbox
from andon.gateway.signing import headers
from andon.httpkit import run_in_thread

SECRET = "integration-secret-of-at-least-32-bytes"


_msg = mes_message  # one valid message, shared with the other gateway tests (conftest)


def _api_url() -> str:
    from prefect.settings import PREFECT_API_URL

    return str(PREFECT_API_URL.value())


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/api"  # nothing listens here


def test_signed_events_reach_prefect_once_even_through_an_outage(prefect_harness: None, tmp_path: Path) -> None:
    box = Outbox(f"sqlite:///{tmp_path / 'outbox.db'}")
    forwarder = Forwarder(box, _dead_url(), resend_after=60, max_backoff=0.5)
    gw = Gateway(box, {p: load_plant(p) for p in ("plant-a", "plant-b")}, SECRET, forwarder)
    forwarder.start()
    try:
        with run_in_thread(create_app(gw), name="andon-gateway") as url, httpx.Client(base_url=url) as client:
            msgs = [_msg(i) for i in range(20)]
            for m in msgs:
                body = json.dumps(m).encode()
                assert client.post("/v1/mes/events", content=body, headers=headers(body, SECRET)).status_code == 202
            again = json.dumps(msgs[0]).encode()  # an MES retry of the first message
            resigned = headers(again, SECRET, timestamp=int(time.time()) + 1)  # a retry is signed anew
            assert client.post("/v1/mes/events", content=again, headers=resigned).json()["duplicate"]
            # the Prefect server is "down": everything waits in the outbox, the forwarder backs off
            wait_until(lambda: forwarder.stats.failures >= 2)
            assert box.counts() == {"stored": 20, "pending": 20, "unsent": 20, "delivered": 0, "dead": 0}
            forwarder.api_url = _api_url().rstrip("/")  # ... and back
            wait_until(lambda: box.counts()["delivered"] == 20, timeout=60)
            metrics = client.get("/metrics").text
        assert "andon_gateway_outbox_pending 0" in metrics and "andon_gateway_events_delivered_total 20" in metrics
        assert "andon_gateway_delivery_lag_seconds_count 20.0" in metrics  # a histogram: one per delivered event
    finally:
        forwarder.stop()

    # the Prefect server has each event exactly once, with the plant as resource
    from andon.gateway.schemas import parse_message, to_event

    ids = [to_event(parse_message(m), load_plant("plant-a"))["id"] for m in msgs]
    body = {"filter": {"id": {"id": ids}, "occurred": {"since": "2026-01-01T00:00:00Z"}}, "limit": 50}
    events = httpx.post(f"{_api_url()}/events/filter", json=body).json()["events"]
    assert sorted(e["id"] for e in events) == sorted(ids)
    assert {e["event"] for e in events} == {"mes.sku.introduced"}
    assert {e["resource"]["prefect.resource.id"] for e in events} == {"andon.plant.plant-a"}
    assert {e["payload"]["sku"] for e in events} == {m["sku"] for m in msgs}


def test_outbox_on_postgres(postgres_database: Callable[[str], str]) -> None:
    from andon.gateway.outbox import ReplayError
    from andon.gateway.schemas import parse_message, to_event

    url = postgres_database("outbox")
    box = Outbox(url)
    event = to_event(parse_message(_msg(1)), load_plant("plant-a"))
    assert box.put(event, "http", "sig-a") and not box.put(event, "http", "sig-b")
    with pytest.raises(ReplayError):
        box.put(event, "http", "sig-a")
    box.close()
    again = Outbox(url)  # durable: a second process sees it
    (due,) = again.due(10, 30)
    assert due.id == event["id"]
    again.mark_sent([due.id])
    again.mark_confirmed([due.id])
    assert again.counts() == {"stored": 1, "pending": 0, "unsent": 0, "delivered": 1, "dead": 0}


def _mosquitto() -> None:
    try:
        with socket.create_connection(("127.0.0.1", 1883), timeout=2):
            pass
    except OSError as exc:
        pytest.skip(f"no MQTT broker on 127.0.0.1:1883 ({exc})")


def test_mes_messages_from_mqtt_share_schemas_ids_and_outbox(tmp_path: Path) -> None:
    import paho.mqtt.client as mqtt

    from andon.gateway.mqtt import MqttBridge, topic_prefix

    _mosquitto()
    box = Outbox(f"sqlite:///{tmp_path / 'outbox.db'}")
    plants = {p: load_plant(p) for p in ("plant-a", "plant-b")}
    gw = Gateway(box, plants, SECRET)
    bridge = MqttBridge(gw, "mqtt://127.0.0.1:1883", client_id=f"andon-test-{uuid.uuid4().hex[:6]}")
    bridge.start()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", 1883)
    pub.loop_start()
    try:
        prefix = topic_prefix(plants["plant-b"])
        assert prefix == "acme/plant-b/mes"
        good = _msg(1, plant="plant-b")
        for payload in (good, good, _msg(2, plant="plant-a"), {"type": "sku.introduced"}):  # dup, wrong plant, bad
            pub.publish(f"{prefix}/line-1/sku", json.dumps(payload), qos=1).wait_for_publish(5)
        pub.publish(f"{prefix}/line-1/sku", b"{not json", qos=1).wait_for_publish(5)
        wait_until(lambda: bridge.received + len(bridge.rejected) >= 5)
    finally:
        pub.loop_stop()
        pub.disconnect()
        bridge.stop()
    assert box.counts()["stored"] == 1 and gw.duplicates == 1 and gw.accepted["mqtt"] == 1
    reasons = " | ".join(why for _topic, why in bridge.rejected)
    assert "published on plant-b's topic" in reasons and "malformed JSON" in reasons and "sku" in reasons
    (due,) = box.due(10, 30)
    assert due.event["resource"]["plant.id"] == "plant-b" and due.event["payload"]["sku"] == "SKU-1"
