"""The MES gateway without a Prefect server: message schemas, signatures, the outbox on SQLite,
and every way a request is refused (with nothing enqueued)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from andon.config import load_plant
from andon.errors import AndonError, DataError
from andon.events import SIGNIFICANT, mes_event_id
from andon.gateway.outbox import Outbox, ReplayError
from andon.gateway.schemas import parse_message, to_event
from andon.gateway.signing import SignatureError, headers, sign, verify

SECRET = "unit-test-secret-of-at-least-32-bytes"


def _msg(kind: str = "sku.introduced", **extra: Any) -> dict[str, Any]:
    base = {"type": kind, "message_id": "MES-1", "plant": "plant-a", "occurred_at": "2026-11-26T08:00:00Z"}
    fields = {
        "sku.introduced": {"sku": "IMPELLER-9"},
        "failure_type.logged": {"failure_type": "TWF"},
        "product_mix.changed": {"mix": {"A": 0.5, "B": 0.5}, "previous_mix": {"A": 0.9, "B": 0.1}},
        "line.reconfigured": {"line": "line-1", "change": "new fixture"},
    }
    return base | fields.get(kind, {}) | extra


@pytest.mark.parametrize("kind", ["sku.introduced", "failure_type.logged", "product_mix.changed", "line.reconfigured"])
def test_every_message_type_becomes_a_plant_event_with_a_deterministic_id(kind: str) -> None:
    cfg = load_plant("plant-a")
    event = to_event(parse_message(_msg(kind)), cfg)
    assert event["event"] == f"mes.{kind}"
    assert event["resource"]["prefect.resource.id"] == "andon.plant.plant-a"
    assert event["id"] == str(mes_event_id("plant-a", "MES-1"))  # the same message id: the same event
    assert event["payload"]["message_id"] == "MES-1" and event["payload"]["occurred_at"].startswith("2026-11-26T08")


def test_product_mix_shift_decides_whether_the_event_is_significant() -> None:
    cfg = load_plant("plant-a")  # threshold 0.2
    big = to_event(parse_message(_msg("product_mix.changed")), cfg)
    assert big["payload"]["shift"] == pytest.approx(0.4) and big["resource"][SIGNIFICANT] == "true"
    small = _msg("product_mix.changed", mix={"A": 0.85, "B": 0.15})
    assert to_event(parse_message(small), cfg)["resource"][SIGNIFICANT] == "false"


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (_msg("welding.started"), "type: unknown event type"),
        ({k: v for k, v in _msg().items() if k != "sku"}, "sku"),
        (_msg(occurred_at="2026-11-26T08:00:00"), "occurred_at"),
        (_msg("product_mix.changed", mix={"A": 0.7, "B": 0.7}), "mix"),
        (_msg("product_mix.changed", mix={"A": float("nan")}), "mix"),
        (_msg(extra_field=1), "extra_field"),
        (_msg(message_id=""), "message_id"),
        ([1, 2], "JSON object"),
    ],
)
def test_a_wrong_message_names_the_wrong_field(raw: Any, field: str) -> None:
    with pytest.raises(DataError, match=field):
        parse_message(raw)


def test_an_unknown_line_is_refused() -> None:
    with pytest.raises(DataError, match="line: 'line-9' is not a line of plant-a"):
        to_event(parse_message(_msg(line="line-9")), load_plant("plant-a"))


def test_signatures() -> None:
    body = b'{"x": 1}'
    ts, sig = sign(body, SECRET)
    assert verify(body, ts, sig, SECRET) == sig
    cases = [
        (body, None, None, "unsigned"),
        (body + b" ", ts, sig, "forged"),
        (body, ts, sign(body, "other")[1], "forged"),
        (body, "yesterday", sig, "malformed_timestamp"),
        (body, *sign(body, SECRET, timestamp=int(time.time()) - 301), "expired"),
        (body, *sign(body, SECRET, timestamp=int(time.time()) + 301), "expired"),
    ]
    for b, t, s, reason in cases:
        with pytest.raises(SignatureError) as info:
            verify(b, t, s, SECRET)
        assert info.value.reason == reason


def _event(i: int = 1) -> dict[str, Any]:
    return to_event(parse_message(_msg(message_id=f"MES-{i}")), load_plant("plant-a"))


def test_outbox_is_durable_idempotent_and_remembers_signatures(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    box = Outbox(url)
    assert box.put(_event(1), "http", "sig-1") is True
    assert box.put(_event(1), "http", "sig-2") is False  # an MES retry (new signature, same message)
    with pytest.raises(ReplayError):
        box.put(_event(2), "http", "sig-1")  # the same signed request again
    assert box.counts() == {"stored": 1, "pending": 1, "unsent": 1, "delivered": 0, "dead": 0}
    box.close()

    box = Outbox(url)  # after a restart: nothing lost, the replay still refused
    with pytest.raises(ReplayError):
        box.put(_event(3), "http", "sig-2")
    (due,) = box.due(10, resend_after=30)
    assert due.id == _event(1)["id"] and due.event["event"] == "mes.sku.introduced"
    box.mark_sent([due.id])
    assert box.due(10, resend_after=30) == []  # sent, waiting for confirmation
    assert [p.id for p in box.due(10, resend_after=0)] == [due.id]  # unconfirmed too long: send again
    assert [p.id for p in box.unconfirmed(10, older_than=0)] == [due.id]
    box.mark_confirmed([due.id])
    assert box.unconfirmed(10, older_than=0) == [] and box.due(10, resend_after=0) == []
    assert box.counts()["delivered"] == 1 and len(box.lags()) == 1 and box.lags()[0] >= 0


def test_the_app_refuses_bad_requests_and_enqueues_nothing(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from andon.gateway.app import Gateway, create_app

    box = Outbox(f"sqlite:///{tmp_path / 'outbox.db'}")
    gw = Gateway(box, {"plant-a": load_plant("plant-a")}, SECRET)
    client = TestClient(create_app(gw))

    def post(body: bytes, hdrs: dict[str, str] | None = None) -> Any:
        return client.post("/v1/mes/events", content=body, headers=headers(body, SECRET) if hdrs is None else hdrs)

    good = json.dumps(_msg()).encode()
    stale = headers(good, SECRET, timestamp=int(time.time()) - 600)
    refused = [
        (post(good, {}), 401, "unsigned"),
        (post(good, headers(good, "forged-secret")), 401, "forged"),
        (post(good, stale), 401, "expired"),
        (post(b"{not json", None), 400, "malformed JSON"),
        (post(json.dumps(_msg("welding.started")).encode()), 400, "unknown event type"),
        (post(json.dumps(_msg(plant="plant-x")).encode()), 400, "unknown plant 'plant-x'"),
        (post(json.dumps(_msg(sku="")).encode()), 400, "sku"),
        (post(b"x" * (1024 * 1024 + 1)), 413, "over the limit"),
    ]
    for resp, status, text in refused:
        assert resp.status_code == status and text in resp.json()["detail"], resp.text
    assert box.counts()["stored"] == 0

    hdrs = headers(good, SECRET)
    first = client.post("/v1/mes/events", content=good, headers=hdrs)
    assert first.status_code == 202 and first.json()["duplicate"] is False
    replay = client.post("/v1/mes/events", content=good, headers=hdrs)
    assert replay.status_code == 401 and "replayed" in replay.json()["detail"]
    retry = post(good, headers(good, SECRET, timestamp=int(time.time()) + 1))  # re-signed: an MES retry
    assert retry.status_code == 202 and retry.json() == first.json() | {"duplicate": True}
    assert box.counts()["stored"] == 1

    metrics = client.get("/metrics").text
    assert 'andon_gateway_events_received_total{source="http"} 1' in metrics
    assert "andon_gateway_events_duplicate_total 1" in metrics
    for reason, n in [("unsigned", 1), ("forged", 1), ("expired", 1), ("malformed", 1), ("replayed", 1),
                      ("unknown_type", 1), ("unknown_plant", 1), ("schema", 1), ("too_large", 1)]:  # fmt: skip
        assert f'andon_gateway_events_rejected_total{{reason="{reason}"}} {n}' in metrics
    assert "andon_gateway_outbox_pending 1" in metrics
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["pending"] == 1


def test_the_gateway_needs_a_secret(tmp_path: Path) -> None:
    from andon.gateway.app import Gateway

    with pytest.raises(AndonError, match="ANDON_MES_SECRET"):
        Gateway(Outbox(f"sqlite:///{tmp_path / 'o.db'}"), {}, "")
